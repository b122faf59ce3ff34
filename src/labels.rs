//! The label names healthsweep puts on per-service series itself, and so the names a service's
//! own `labels` may not use.
//!
//! Every label the metrics add next to a service's labels is named here and nowhere else: the
//! config refuses these names ([`RESERVED`]), and a test in `metrics` renders every per-service
//! family and checks that no other name appears. A new metric label therefore cannot collide
//! with a configured one (a duplicate label makes Prometheus reject the whole scrape).

/// The service's name, on every per-service series.
pub const TARGET: &str = "target";
/// The service's group, when it has one.
pub const GROUP: &str = "group";
/// `healthsweep_probe_failure_reason`: why the latest check failed.
pub const REASON: &str = "reason";
/// `healthsweep_checks_total`: `ok` or a failure reason.
pub const RESULT: &str = "result";
/// `probe_grpc_healthcheck_response`: the serving status received (blackbox_exporter's name).
pub const SERVING_STATUS: &str = "serving_status";
/// Its values: `ServingStatus` of grpc/health/v1/health.proto, in the order of their numbers.
pub const SERVING_STATUSES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// Names a service's `labels` may not use: ours above, and those Prometheus' service discovery
/// and scrape attach to every series (a clash renames ours to `exported_*`). Names starting
/// with `__` are Prometheus' own and refused separately.
pub const RESERVED: &[&str] = &[
    TARGET,
    GROUP,
    REASON,
    RESULT,
    SERVING_STATUS,
    "state",
    "instance",
    "job",
    "service",
];

/// Whether `name` may be a service's own label.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name) || name.starts_with("__")
}

/// `value` escaped for a label value of the text exposition format: `\`, `"` and newline.
pub fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The labels every series of a service carries, as exposition text without the braces:
/// `target="orders",group="core",team="checkout"`. Built once when the config is loaded, so a
/// scrape copies it instead of escaping every label of every service for every family.
pub fn series_labels<'a>(
    target: &str,
    group: Option<&str>,
    own: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Box<str> {
    let mut out = String::with_capacity(16 + target.len());
    let pair = |out: &mut String, name: &str, value: &str| {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_into(out, value);
        out.push('"');
    };
    pair(&mut out, TARGET, target);
    if let Some(g) = group {
        pair(&mut out, GROUP, g);
    }
    for (name, value) in own {
        pair(&mut out, name, value);
    }
    out.into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_labels_are_escaped_and_in_order() {
        let own: std::collections::BTreeMap<String, String> =
            [("team".to_string(), "a \"b\" \\ c\nd".to_string())].into();
        assert_eq!(
            &*series_labels("svc", Some("g"), &own),
            r#"target="svc",group="g",team="a \"b\" \\ c\nd""#
        );
        assert_eq!(&*series_labels("x", None, []), r#"target="x""#);
    }

    #[test]
    fn reserved_names_include_ours_and_prometheus_prefixes() {
        for name in [TARGET, GROUP, REASON, RESULT, "__name__", "__meta_x"] {
            assert!(is_reserved(name), "{name}");
        }
        assert!(!is_reserved("team"));
    }
}
