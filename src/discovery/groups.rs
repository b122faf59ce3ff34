//! Target groups in Prometheus' file_sd / http_sd format: a list of `{"targets": [...],
//! "labels": {...}}`, as JSON or as the same list in YAML. Parsed strictly as Prometheus does:
//! an unknown key, a target that is not a string or a label value that is not one is an error
//! for the whole document.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One target group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How a document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By file extension, as Prometheus' file_sd goes: `.json`, `.yml`, `.yaml`.
    pub fn of_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yml" | "yaml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// The target groups of `text`. An empty YAML document is no groups (as Prometheus reads
/// one); an empty JSON document is an error (a file caught mid-write).
pub fn parse(text: &[u8], format: Format) -> Result<Vec<TargetGroup>, String> {
    let groups: Vec<TargetGroup> = match format {
        Format::Json => serde_json::from_slice(text).map_err(|e| e.to_string())?,
        Format::Yaml => {
            if text.iter().all(u8::is_ascii_whitespace) {
                return Ok(Vec::new());
            }
            serde_norway::from_slice::<Option<Vec<TargetGroup>>>(text)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
        }
    };
    if let Some(empty) = groups
        .iter()
        .flat_map(|g| &g.targets)
        .find(|t| t.trim().is_empty())
    {
        return Err(format!("an empty target ({empty:?})"));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_give_the_same_groups() {
        let json =
            br#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": ["c:3"]}]"#;
        let yaml = b"- targets: ['a:1', 'b:2']\n  labels:\n    env: prod\n- targets: ['c:3']\n";
        let j = parse(json, Format::Json).expect("json");
        assert_eq!(j, parse(yaml, Format::Yaml).expect("yaml"));
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].labels["env"], "prod");
        assert!(j[1].labels.is_empty());
    }

    #[test]
    fn broken_documents_are_errors_and_an_empty_yaml_file_is_no_groups() {
        assert!(
            parse(b"[{\"targets\": [\"a:1\"]", Format::Json).is_err(),
            "half written"
        );
        assert!(parse(b"", Format::Json).is_err());
        assert!(
            parse(b"[{\"targets\": [1]}]", Format::Json).is_err(),
            "not a string"
        );
        assert!(
            parse(b"[{\"targets\": [], \"lables\": {}}]", Format::Json).is_err(),
            "unknown key"
        );
        assert!(parse(b"[{\"targets\": [\"\"]}]", Format::Json).is_err());
        assert_eq!(parse(b"\n", Format::Yaml).expect("empty"), Vec::new());
        assert!(parse(b"- targets: [a:1\n", Format::Yaml).is_err());
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_at_once_and_plain_aliases_work() {
        // Nine levels of ten aliases each: 10^9 targets if expanded.
        let mut doc = String::from("a0: &a0 [\"x:1\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        doc.push_str("list:\n- targets: *a9\n");
        let started = tokio::time::Instant::now();
        let parsed = parse(doc.as_bytes(), Format::Yaml);
        assert!(parsed.is_err(), "the bomb was not refused");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The same with a list at the top, as file_sd has it.
        let mut doc = String::from("- targets: &t0 [\"x:1\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*t{}", i - 1); 10].join(", ");
            doc.push_str(&format!("- targets: &t{i} [{refs}]\n"));
        }
        assert!(parse(doc.as_bytes(), Format::Yaml).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // An alias of a whole group is just that group again, as in Prometheus.
        let plain = b"- &g {targets: ['x:1'], labels: {env: prod}}\n- *g\n";
        assert_eq!(parse(plain, Format::Yaml).expect("aliases").len(), 2);
    }

    #[test]
    fn deeply_nested_or_wrongly_typed_documents_are_errors() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(deep.as_bytes(), Format::Json).is_err());
        assert!(parse(deep.as_bytes(), Format::Yaml).is_err());
        for bad in [
            r#"[{"targets": [1]}]"#,
            r#"[{"targets": ["a:1"], "labels": {"x": 1}}]"#,
            r#"[{"targets": ["a:1"], "extra": true}]"#,
            r#"{"targets": ["a:1"]}"#,
            r#"[{"targets": [" "]}]"#,
        ] {
            assert!(parse(bad.as_bytes(), Format::Json).is_err(), "{bad}");
        }
    }
}
