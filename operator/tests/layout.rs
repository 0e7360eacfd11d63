//! The module layout keeps its shape: no two top-level modules of the crate
//! import each other, directly or through others. A cycle means a constant or
//! a helper sits in the wrong room.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each module's non-test code names with `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests" && n != "bin") {
                    stack.push(path);
                }
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
            if ["lib", "main", "tests", "fixtures"].contains(&top) || rel.ends_with("fixtures.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let deps = graph.entry(top.to_string()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + 7..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split([',', '}']).collect(),
                        None => vec![rest],
                    };
                    for n in names {
                        let word: String = n
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if word.starts_with(|c: char| c.is_ascii_lowercase()) && word != top {
                            deps.insert(word);
                        }
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, if there is one.
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = path.last().unwrap().clone();
    for next in graph.get(&last).into_iter().flatten() {
        if next == from {
            return Some(path.clone());
        }
        if !path.contains(next) && graph.contains_key(next) {
            path.push(next.clone());
            if let Some(c) = cycle(graph, from, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = imports();
    assert!(graph.len() > 15, "modules found: {:?}", graph.keys());
    assert!(graph["controller"].contains("plan"), "{graph:?}");
    for m in graph.keys() {
        if let Some(c) = cycle(&graph, m, &mut vec![m.clone()]) {
            panic!("import cycle: {} -> {m}", c.join(" -> "));
        }
    }
}
