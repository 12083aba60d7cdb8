#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! The gateway's modules import one way: serving → pipeline → stages → attempts → relay →
//! foundation (ARCHITECTURE.md, "The request path"). This test reads every `crate::…` and
//! `super::…` path in `src/` (test modules left out) and fails on an import against that order,
//! and on any import cycle between modules, naming the offending lines.
//!
//! A module may use its own layer and the layers below it. Inside `stages/`, `attempts/` and
//! `relay/` each child module counts on its own (so `attempts/rounds.rs` and `attempts/judge.rs`
//! may use each other only one way); elsewhere a top-level module counts as one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top to bottom, and the top-level modules in each.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "serving",
        &[
            "server",
            "app",
            "background",
            "admin",
            "probes",
            "shared",
            "connections",
            "http1",
            "ui",
            "incidents",
            "incident_worker",
        ],
    ),
    ("pipeline", &["pipeline"]),
    ("stages", &["stages"]),
    ("attempts", &["attempts"]),
    ("relay", &["relay"]),
    (
        "foundation",
        &[
            "state",
            "api_keys",
            "admission",
            "client",
            "dashboard_feed",
            "config",
            "endpoint",
            "error",
            "incident_log",
            "answer",
            "answer_tail",
            "bridge",
            "routing",
            "retry",
            "rate_limits",
            "remote",
            "request_id",
            "request_metrics",
            "shutdown",
            "startup_series",
            "traces",
        ],
    ),
];

/// Folders whose child modules are checked for cycles one by one.
const SPLIT: &[&str] = &["stages", "attempts", "relay"];

/// One reference from a module to another.
#[derive(Debug, Clone)]
struct Reference {
    /// `src/`-relative file and line number.
    file: String,
    line: usize,
    text: String,
    /// The referenced path, from the crate root.
    path: Vec<String>,
}

/// `attempts/rounds.rs` → `["attempts", "rounds"]`; `attempts/mod.rs` → `["attempts"]`.
fn module_path(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs");
    let mut segments: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if segments.last().is_some_and(|s| s == "mod" || s == "lib") {
        segments.pop();
    }
    segments
}

/// Every `crate::` and `super::` path in `source` before its first `#[cfg(test)]`, and every
/// `use` of a child module of this one (`use rounds::send;` in `attempts/mod.rs`), resolved from
/// the crate root (`use crate::{a, b::{c, d}}` gives `a`, `b::c`, `b::d`).
fn references(file: &str, source: &str, modules: &BTreeSet<Vec<String>>) -> Vec<Reference> {
    let here = module_path(file);
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let used = code.trim_start().trim_start_matches("pub(crate) ").trim_start_matches("pub ").strip_prefix("use ");
        for tail in used.map(expand).unwrap_or_default() {
            let path: Vec<String> = here.iter().cloned().chain(tail).collect();
            if path.len() > here.len() && modules.contains(&path[..here.len() + 1]) {
                found.push(Reference { file: file.to_owned(), line: number + 1, text: line.trim().to_owned(), path });
            }
        }
        for (start, keyword) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            // `keel_crate::` or `my_super::` are other names.
            let before = code[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut base =
                if keyword == "crate::" { Vec::new() } else { here[..here.len().saturating_sub(1)].to_vec() };
            let mut rest = &code[start + keyword.len()..];
            while let Some(after) = rest.strip_prefix("super::") {
                base.pop();
                rest = after;
            }
            for tail in expand(rest) {
                let mut path = base.clone();
                path.extend(tail);
                found.push(Reference { file: file.to_owned(), line: number + 1, text: line.trim().to_owned(), path });
            }
        }
    }
    found
}

/// The paths a `use` tail stands for: `a::b::{c, d::e}` gives `a::b::c` and `a::b::d::e`.
fn expand(tail: &str) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut rest = tail;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..closing(group)];
            return split_top_level(inner)
                .into_iter()
                .flat_map(|part| expand(part.trim()))
                .map(|tail| path.iter().cloned().chain(tail).collect())
                .collect();
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    vec![path]
}

/// The index of the `}` closing a group whose `{` was just passed.
fn closing(group: &str) -> usize {
    let mut depth = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    group.len()
}

/// `a, b::{c, d}, e` split at its top-level commas.
fn split_top_level(inner: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The layer index of a top-level module (0 is the top).
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// The unit a path belongs to for the cycle check (`attempts::judge`, or `state`).
fn unit_of(path: &[String], modules: &BTreeSet<Vec<String>>) -> String {
    match path {
        [top, child, ..] if SPLIT.contains(&top.as_str()) && modules.contains(&vec![top.clone(), child.clone()]) => {
            format!("{top}::{child}")
        }
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// Everything wrong with the imports of these `(src-relative file, source)` pairs.
fn problems(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(file, _)| module_path(file)).collect();
    let order = LAYERS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" → ");
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeMap<String, Reference>> = BTreeMap::new();
    for (file, source) in files {
        let from = module_path(file);
        let Some(top) = from.first() else { continue };
        let Some(from_layer) = layer_of(top) else {
            problems.push(format!("src/{file}: module `{top}` is in no layer; add it to LAYERS in tests/import_order.rs and to ARCHITECTURE.md"));
            continue;
        };
        let from_unit = unit_of(&from, &modules);
        for reference in references(file, source, &modules) {
            let Some(to_top) = reference.path.first() else { continue };
            let Some(to_layer) = layer_of(to_top) else { continue };
            if to_layer < from_layer {
                problems.push(format!(
                    "src/{}:{}: `{}` — {} ({}) imports {} ({}), a layer above it (order: {order}); pass a callback or trait object down instead",
                    reference.file,
                    reference.line,
                    reference.text,
                    top,
                    LAYERS[from_layer].0,
                    to_top,
                    LAYERS[to_layer].0
                ));
            }
            let to_unit = unit_of(&reference.path, &modules);
            if to_unit != from_unit {
                edges.entry(from_unit.clone()).or_default().entry(to_unit).or_insert(reference);
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// One message per import cycle between units, naming a line for each step.
fn cycles(edges: &BTreeMap<String, BTreeMap<String, Reference>>) -> Vec<String> {
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((unit, trail)) = stack.pop() {
            for next in edges.get(&unit).map(|e| e.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                if next == *start {
                    let mut members = trail.clone();
                    members.sort();
                    if reported.insert(members) {
                        let steps = trail
                            .iter()
                            .zip(trail.iter().skip(1).chain(std::iter::once(start)))
                            .map(|(a, b)| {
                                let r = &edges[a][b];
                                format!("  {a} → {b}: src/{}:{}: `{}`", r.file, r.line, r.text)
                            })
                            .collect::<Vec<_>>()
                            .join("\n");
                        found.push(format!("import cycle {} → {start}:\n{steps}", trail.join(" → ")));
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next, longer));
                }
            }
        }
    }
    found
}

/// The gateway's sources, `src/`-relative, without whole test files.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
                let relative = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_gateway_imports_run_one_way() {
    let files = sources();
    assert!(files.len() > 30, "read only {} files", files.len());
    let problems = problems(&files);
    assert!(problems.is_empty(), "imports against the declared order:\n{}", problems.join("\n"));
}

/// The check itself: an upward import planted in the real sources is reported with its line.
#[test]
fn a_planted_upward_import_is_reported() {
    let mut files = sources();
    let relay = files.iter_mut().find(|(file, _)| file == "relay/mod.rs").unwrap();
    relay.1 = format!("use crate::attempts::send;\n{}", relay.1);
    let problems = problems(&files);
    assert!(problems.len() >= 2, "{problems:#?}");
    assert!(problems[0].starts_with("src/relay/mod.rs:1: `use crate::attempts::send;` — relay (relay) imports attempts (attempts), a layer above it"), "{}", problems[0]);
    // attempts → relay already exists, so the planted line also closes cycles.
    for cycle in &problems[1..] {
        assert!(cycle.starts_with("import cycle"), "{cycle}");
        assert!(cycle.contains("relay → attempts: src/relay/mod.rs:1: `use crate::attempts::send;`"), "{cycle}");
    }
}

/// Two sibling stages that use each other, and grouped and `super::` paths, are read right.
#[test]
fn a_cycle_between_siblings_is_reported() {
    let mut files = sources();
    let guard = files.iter_mut().find(|(file, _)| file == "stages/guard.rs").unwrap();
    guard.1 = format!("use super::{{auth, session::{{SessionRequest, admin}}}};\n{}", guard.1);
    let problems = problems(&files);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("stages::guard → stages::session"), "{}", problems[0]);
    assert!(problems[0].contains("stages::session → stages::guard"), "{}", problems[0]);
}

#[test]
fn paths_are_expanded() {
    let modules = [vec!["attempts".to_owned()], vec!["attempts".to_owned(), "rounds".to_owned()]].into();
    let source = "use super::judge::{Judged, x::{A, B}};\nlet k = crate::routing::key(); // crate::state::no\n\
                  use keel_crate::x;\n#[cfg(test)]\nuse crate::pipeline;";
    let refs = references("attempts/rounds.rs", source, &modules);
    let paths: Vec<String> = refs.iter().map(|r| r.path.join("::")).collect();
    assert_eq!(paths, ["attempts::judge::Judged", "attempts::judge::x::A", "attempts::judge::x::B", "routing::key"]);
    assert_eq!(refs[3].line, 2);
    // A child module used by its parent without `self::`.
    let refs = references("attempts/mod.rs", "mod rounds;\npub(crate) use rounds::send;\nuse std::x;", &modules);
    let paths: Vec<String> = refs.iter().map(|r| r.path.join("::")).collect();
    assert_eq!(paths, ["attempts::rounds::send"]);
}
