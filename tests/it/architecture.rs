//! The module table of ARCHITECTURE.md is the law: every `crate::` path in a module of `src/`
//! must name a module its row allows, so the dependency picture cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> modules it may use`, from the table in ARCHITECTURE.md.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let mut table = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_string();
        let uses = cells[3]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty())
            .collect();
        table.insert(module, uses);
    }
    table
}

/// The top-level module a source file belongs to, and the text it is written in without its
/// unit tests (tests may use anything).
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a name")
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.push((top, code));
        }
    }
    out
}

#[test]
fn every_module_uses_only_what_architecture_md_allows() {
    let allowed = allowed();
    assert!(allowed.len() > 20, "the table was read: {allowed:?}");
    let mut wrong = Vec::new();
    for (module, code) in sources() {
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(may) = allowed.get(&module) else {
            wrong.push(format!("{module} is not in ARCHITECTURE.md"));
            continue;
        };
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !used.is_empty() && used != module && !may.contains(&used) {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "dependencies ARCHITECTURE.md does not allow: {wrong:?}"
    );
}
