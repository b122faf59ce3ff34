//! `depends_on`: read where it is written (a service, `[defaults]`, a discovery template), then
//! checked once every service is known: each name is a service of the config files (not the
//! service itself, not a discovered one, whose names come and go), and no chain of
//! dependencies comes back to where it started. Errors name the file and line of the list and,
//! for a cycle, the whole chain.

use std::collections::HashMap;
use std::sync::Arc;

use toml::Spanned;

use super::discover::Discover;
use super::{DependsOn, Service, Validator};

/// Dependencies one service may list at most.
const MAX_DEPENDENCIES: usize = 64;

impl Validator<'_> {
    /// Reads a `depends_on` list: names, each once.
    pub(super) fn depends_on(&mut self, d: &Spanned<Vec<String>>) -> Option<Arc<DependsOn>> {
        let names = d.get_ref();
        if names.len() > MAX_DEPENDENCIES {
            self.report(
                Some(&d.span()),
                format!(
                    "depends_on lists {} services; at most {MAX_DEPENDENCIES}",
                    names.len()
                ),
            );
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        for n in names {
            if n.trim().is_empty() {
                self.report(Some(&d.span()), "depends_on: a name is empty");
                return None;
            }
            if !seen.insert(n.as_str()) {
                self.report(Some(&d.span()), format!("depends_on names {n:?} twice"));
                return None;
            }
        }
        Some(Arc::new(DependsOn {
            names: names.iter().map(|n| n.as_str().into()).collect(),
            file: self.current,
            span: d.span(),
        }))
    }

    /// Every name resolves; no cycles.
    pub(super) fn dependencies(&mut self, services: &[Arc<Service>], discover: &[Arc<Discover>]) {
        if services.iter().all(|s| s.extra.depends_on.is_none())
            && discover
                .iter()
                .all(|d| d.template.options.depends_on.is_none())
        {
            return;
        }
        let index: HashMap<&str, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let saved = (self.current, self.service.take());
        for s in services {
            let Some(d) = &s.extra.depends_on else {
                continue;
            };
            for n in d.names.iter() {
                if **n == *s.name {
                    self.report_at(
                        d,
                        Some(&s.name),
                        "depends_on names the service itself".into(),
                    );
                } else if !index.contains_key(&**n) {
                    self.report_at(
                        d,
                        Some(&s.name),
                        format!(
                            "depends_on names {n:?}, but no service of the config is called that"
                        ),
                    );
                }
            }
        }
        for source in discover {
            let Some(d) = &source.template.options.depends_on else {
                continue;
            };
            for n in d.names.iter() {
                if !index.contains_key(&**n) {
                    self.report_at(
                        d,
                        None,
                        format!(
                            "discover {:?}: depends_on names {n:?}, but no service of the config is called that (discovered services cannot be depended on)",
                            source.name
                        ),
                    );
                }
            }
        }
        for cycle in cycles(services, &index) {
            let first = &services[cycle[0]];
            let chain: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .map(|&i| services[i].name.as_str())
                .collect();
            if let Some(d) = &first.extra.depends_on {
                self.report_at(
                    d,
                    Some(&first.name),
                    format!("depends_on makes a cycle: {}", chain.join(" → ")),
                );
            }
        }
        (self.current, self.service) = saved;
    }

    fn report_at(&mut self, d: &DependsOn, service: Option<&str>, message: String) {
        self.current = d.file;
        self.service = service.map(str::to_string);
        self.report(Some(&d.span), message);
    }
}

/// Each cycle of the dependency graph once, as the services on it in order.
fn cycles(services: &[Arc<Service>], index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let deps = |i: usize| -> Vec<usize> {
        services[i]
            .extra
            .depends_on
            .as_ref()
            .map(|d| {
                d.names
                    .iter()
                    .filter_map(|n| index.get(&**n).copied())
                    .filter(|&j| j != i)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut mark = vec![Mark::New; services.len()];
    let mut found = Vec::new();
    for start in 0..services.len() {
        if mark[start] != Mark::New || services[start].extra.depends_on.is_none() {
            continue;
        }
        // Iterative depth-first search: (node, its dependencies, the next one to visit).
        let mut path: Vec<(usize, Vec<usize>, usize)> = vec![(start, deps(start), 0)];
        mark[start] = Mark::OnPath;
        while let Some((node, next, at)) = path.last_mut() {
            if let Some(&j) = next.get(*at) {
                *at += 1;
                match mark[j] {
                    Mark::New => {
                        mark[j] = Mark::OnPath;
                        path.push((j, deps(j), 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|(n, _, _)| *n == j).unwrap_or(0);
                        found.push(path[from..].iter().map(|(n, _, _)| *n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                path.pop();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::*;

    fn parse_ok(src: &str) -> Config {
        parse_str(src).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")))
    }

    fn parse_err(src: &str) -> String {
        match parse_str(src) {
            Ok(_) => panic!("accepted: {src}"),
            Err(e) => e.lines().join("\n"),
        }
    }

    fn svc(name: &str, deps: &str) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:9/{name}\"\ndepends_on = [{deps}]\n\n"
        )
    }

    #[test]
    fn dependencies_resolve_from_services_and_defaults() {
        let c = parse_ok(&format!(
            "[defaults]\ndepends_on = [\"db\"]\n\n[[service]]\nname = \"db\"\nurl = \"http://127.0.0.1:9/\"\ndepends_on = []\n\n{}",
            svc("api", "\"db\", \"cache\"")
                + &svc("cache", "")
                + "[[service]]\nname = \"web\"\nurl = \"http://127.0.0.1:9/w\"\n"
        ));
        let names = |n: &str| -> Vec<String> {
            c.services
                .iter()
                .find(|s| s.name == n)
                .and_then(|s| s.extra.depends_on.as_ref())
                .map(|d| d.names.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(names("api"), ["db", "cache"]);
        assert_eq!(names("web"), ["db"], "from [defaults]");
        assert!(names("db").is_empty(), "its own empty list wins");
    }

    #[test]
    fn unknown_names_self_references_and_cycles_are_errors_naming_the_chain() {
        let text = parse_err(
            &(svc("a", "\"b\"")
                + &svc("b", "\"c\"")
                + &svc("c", "\"a\"")
                + &svc("d", "\"nope\"")
                + &svc("e", "\"e\"")),
        );
        assert!(
            text.contains("depends_on makes a cycle: a → b → c → a"),
            "{text}"
        );
        assert!(
            text.contains("depends_on names \"nope\", but no service"),
            "{text}"
        );
        assert!(
            text.contains("depends_on names the service itself"),
            "{text}"
        );
        assert!(text.contains("line 4"), "the line of a's list: {text}");
        assert_eq!(text.matches("cycle").count(), 1, "one cycle, once: {text}");
        let dup = parse_err(&(svc("a", "\"b\", \"b\"") + &svc("b", "")));
        assert!(dup.contains("depends_on names \"b\" twice"), "{dup}");
    }

    #[test]
    fn a_long_chain_without_a_cycle_is_fine() {
        let mut text = String::new();
        for i in 0..2000 {
            let dep = if i + 1 < 2000 {
                format!("\"s{}\"", i + 1)
            } else {
                String::new()
            };
            text.push_str(&svc(&format!("s{i}"), &dep));
        }
        let c = parse_ok(&text);
        assert_eq!(c.services.len(), 2000);
    }
}
