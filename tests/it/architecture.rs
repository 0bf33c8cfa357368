//! The shape of the code, checked on its sources (ARCHITECTURE.md, "Invariants"): no import
//! circle inside a crate, a core of short functions that names nothing of the study, contracts
//! without untyped JSON fields, and an ensemble that reads artifacts only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A source without comments and without its `#[cfg(test)] mod tests` (tests may import
/// anything of their module's crate).
fn code(path: &Path) -> String {
    without_tests(path)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A source without its `#[cfg(test)] mod tests`.
fn without_tests(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `a::b` for `src/a/b.rs` or `src/a/b/mod.rs`; `""` for the crate root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The modules each module of a crate names through `crate::...` paths (the longest module
/// prefix of each path, a braced `use crate::{a, b::c}` group included).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (m, f) in &mods {
        let text = code(f);
        let mut paths: Vec<String> = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                paths.extend(group[..end].split(',').map(|s| s.trim().to_string()));
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                paths.push(rest[..end].to_string());
            }
        }
        let mut to = BTreeSet::new();
        for p in paths {
            let parts: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| mods.contains_key(c));
            if let Some(t) = target.filter(|t| t != m && !t.is_empty()) {
                to.insert(t);
            }
        }
        graph.insert(m.clone(), to);
    }
    graph
}

/// A circle of `graph`, if it has one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for n in g.get(m).into_iter().flatten() {
            match state.get(n) {
                Some(1) => {
                    let start = path.iter().position(|p| p == n).unwrap();
                    let mut c = path[start..].to_vec();
                    c.push(n.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, n, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if !state.contains_key(m) {
            if let Some(c) = visit(graph, m, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn crate_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    v.push(root().join("xtask/src"));
    v.sort();
    v
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut circles = Vec::new();
    for src in crate_sources() {
        if let Some(c) = circle(&module_graph(&src)) {
            circles.push(format!("{}: {}", src.display(), c.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::X;\n").unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("b/mod.rs"), "use crate::{c, a::Y};\n").unwrap();
    std::fs::write(src.join("c.rs"), "// use crate::a;\nfn f() {}\n").unwrap();
    assert_eq!(
        circle(&module_graph(src)),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    std::fs::write(src.join("b/mod.rs"), "use crate::c;\n").unwrap();
    assert_eq!(circle(&module_graph(src)), None);
}

/// `(name, lines)` of every function of a source over `max` lines (a `fn` line to the line
/// that closes it at the same indentation).
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = " ".repeat(indent) + "}";
        if let Some(end) = lines[i..].iter().position(|m| m.trim_end() == close) {
            if end + 1 > max {
                out.push((name, end + 1));
            }
        }
    }
    out
}

#[test]
fn the_core_has_short_functions_and_names_nothing_of_the_study() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/pipeline/src"), &mut files);
    let mut long = Vec::new();
    let mut study = Vec::new();
    for f in &files {
        let text = code(f);
        for (name, n) in long_functions(&without_tests(f), 120) {
            long.push(format!("{}: {name} ({n} lines)", f.display()));
        }
        for word in [
            "\"skipped\"",
            "\"report.out\"",
            "\"vgg-extract\"",
            "\"head-nn\"",
            "\"logreg\"",
        ] {
            if text.contains(word) {
                study.push(format!("{}: {word}", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over 120 lines:\n{}",
        long.join("\n")
    );
    assert!(
        study.is_empty(),
        "the core names the study:\n{}",
        study.join("\n")
    );
    // The measure itself.
    let body = "fn f() {\n".to_string() + &"    x();\n".repeat(120) + "}\n";
    assert_eq!(long_functions(&body, 120), vec![("f".to_string(), 122)]);
}

#[test]
fn contracts_have_no_untyped_json_fields() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/contracts/src"), &mut files);
    let mut found = Vec::new();
    for f in &files {
        for l in code(f).lines() {
            let t = l.trim_start();
            if t.starts_with("pub ") && !t.starts_with("pub fn") && t.contains("Value") {
                found.push(format!("{}: {t}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "public JSON fields:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_ensemble_depends_on_no_other_stage() {
    let manifest = std::fs::read_to_string(root().join("crates/ensemble/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let stage_crates = [
        "loader",
        "preprocess",
        "vgg-extract",
        "describe",
        "head-nn",
        "logreg",
        "scratch-cnn",
        "nn-train",
        "report",
    ];
    for l in deps.lines() {
        let name = l.split(['=', '.']).next().unwrap_or("").trim();
        assert!(
            !stage_crates.contains(&name),
            "ensemble depends on `{name}`"
        );
    }
}
