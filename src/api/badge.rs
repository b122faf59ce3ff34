//! Badges for wikis and READMEs: `/badge/{name}.svg` (the state) and
//! `/badge/{name}/uptime/{24h,7d,30d}.svg`, in the flat style of shields.io. An unknown
//! service still gets an image ("not found", status 404), so a page showing it is not broken.

use std::time::SystemTime;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::{Api, HttpResponse};
use crate::body::Body;
use crate::history;
use crate::snapshot::State;

/// Characters of a service name shown at most.
const NAME_CHARS: usize = 40;

const GREEN: &str = "#4c1";
const YELLOWGREEN: &str = "#97ca00";
const YELLOW: &str = "#dfb317";
const RED: &str = "#e05d44";
const GREY: &str = "#9f9f9f";

/// What a badge path asks for.
#[derive(Debug, PartialEq)]
pub(super) enum Badge<'a> {
    State(&'a str),
    Uptime(&'a str, usize),
}

impl<'a> Badge<'a> {
    /// Parses the part after `/badge/` (still percent-encoded).
    pub(super) fn parse(rest: &'a str) -> Option<Badge<'a>> {
        let rest = rest.strip_suffix(".svg")?;
        for (i, (window, _)) in history::WINDOWS.iter().enumerate() {
            if let Some(name) = rest
                .strip_suffix(window)
                .and_then(|r| r.strip_suffix("/uptime/"))
            {
                return (!name.is_empty()).then_some(Badge::Uptime(name, i));
            }
        }
        (!rest.is_empty() && !rest.contains('/')).then_some(Badge::State(rest))
    }
}

pub(super) fn badge(api: &Api, badge: Badge<'_>) -> HttpResponse {
    let raw = match badge {
        Badge::State(n) | Badge::Uptime(n, _) => n,
    };
    let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let snapshot = api.snapshot();
    let Some(st) = snapshot.service(&name) else {
        return svg(StatusCode::NOT_FOUND, &name, "not found", GREY);
    };
    match badge {
        Badge::State(_) => {
            let colour = match st.state {
                State::Up => GREEN,
                State::Degraded => YELLOW,
                State::Down => RED,
                State::Unknown => GREY,
            };
            svg(StatusCode::OK, &name, st.state.as_str(), colour)
        }
        Badge::Uptime(_, i) => {
            let (window, span) = history::WINDOWS[i];
            let now = history::millis(SystemTime::now());
            let from = now - i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
            let uptime = history::read(&api.history)
                .services
                .get(name.as_ref())
                .and_then(|h| h.uptime(from, now));
            let label = format!("uptime {window}");
            match uptime {
                None => svg(StatusCode::OK, &label, "no data", GREY),
                Some(u) => {
                    let colour = match u {
                        u if u >= 0.999 => GREEN,
                        u if u >= 0.99 => YELLOWGREEN,
                        u if u >= 0.95 => YELLOW,
                        _ => RED,
                    };
                    svg(StatusCode::OK, &label, &percent(u), colour)
                }
            }
        }
    }
}

fn percent(u: f64) -> String {
    let p = u * 100.0;
    if p >= 100.0 {
        "100%".into()
    } else if p >= 99.9 {
        format!("{p:.3}%")
    } else {
        format!("{p:.2}%")
    }
}

/// Verdana 11px widths (what shields.io measures with), close enough for layout.
fn text_width(s: &str) -> u32 {
    s.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '|' | '!' | '\'' => 3,
            'f' | 't' | 'r' | 'I' | ' ' | '(' | ')' | '[' | ']' | '-' => 4,
            'm' | 'w' | 'M' | 'W' | '%' => 10,
            'A'..='Z' => 8,
            _ => 7,
        })
        .sum()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A two-part flat badge: `label | message`, the message on `colour`.
fn render(label: &str, message: &str, colour: &str) -> String {
    let label: String = if label.chars().count() > NAME_CHARS {
        label.chars().take(NAME_CHARS - 1).chain(['…']).collect()
    } else {
        label.to_string()
    };
    let lw = text_width(&label) + 10;
    let mw = text_width(message) + 10;
    let w = lw + mw;
    let (l, m) = (escape(&label), escape(message));
    let (lx, mx) = (lw * 5, lw * 10 + mw * 5);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{l}: {m}"><title>{l}: {m}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{colour}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110"><text x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{l}</text><text x="{lx}" y="140" transform="scale(.1)">{l}</text><text x="{mx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{m}</text><text x="{mx}" y="140" transform="scale(.1)">{m}</text></g></svg>"##
    )
}

fn svg(status: StatusCode, label: &str, message: &str, colour: &str) -> HttpResponse {
    let mut r = Response::new(Body::whole(render(label, message, colour).into_bytes()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    // Image proxies (GitHub's camo) cache unless told not to.
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_paths_parse() {
        assert_eq!(Badge::parse("ledger.svg"), Some(Badge::State("ledger")));
        assert_eq!(
            Badge::parse("ledger/uptime/7d.svg"),
            Some(Badge::Uptime("ledger", 1))
        );
        assert_eq!(Badge::parse("a%2Fb.svg"), Some(Badge::State("a%2Fb")));
        for bad in [
            "ledger",
            ".svg",
            "ledger/uptime/1y.svg",
            "/uptime/24h.svg",
            "a/b.svg",
        ] {
            assert_eq!(Badge::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_names_cannot_break_out_of_the_svg() {
        let s = render("<script>alert(1)</script>&\"'\u{1}", "down", RED);
        assert!(!s.contains("<script"));
        assert!(s.contains("&lt;script&gt;"));
        assert!(!s.contains('\u{1}'));
        assert!(!render("a\u{fffe}\u{ffff}", "up", GREEN).contains('\u{fffe}'));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
    }

    #[test]
    fn long_names_are_cut_and_the_badge_grows_with_its_text() {
        let long = "x".repeat(500);
        let s = render(&long, "up", GREEN);
        assert!(s.len() < 2000, "{}", s.len());
        assert!(text_width("a longer label") > text_width("short"));
        assert_eq!(percent(0.99995), "99.995%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.5), "50.00%");
    }
}
