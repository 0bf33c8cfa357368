//! The identity of a stage's code, computed at build time.
//!
//! A stage's cache key must change whenever its source changes, or the source of any workspace
//! crate it uses (cargo's fingerprints solve the same problem). A stage crate calls [`emit`]
//! from its `build.rs`; that hashes the crate's `Cargo.toml`, `build.rs` and `src/` tree plus,
//! recursively, those of every path dependency (directly or via `workspace = true`), and sets
//! the compile-time variable `CODE_HASH`. Tests, benches and examples are not part of the hash:
//! they cannot change what a stage computes.
//!
//! The hash covers file *contents* and paths relative to each crate root, never mtimes or
//! absolute paths, so two clones of the same commit agree.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Called from a `build.rs`: sets `CODE_HASH` for the crate being built and asks cargo to rerun
/// the build script when any hashed file changes.
pub fn emit() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    match crate_closure(&dir) {
        Ok(crates) => {
            let hash = hash_crates(&crates).unwrap_or_else(|e| panic!("code-hash: {e}"));
            for c in &crates {
                for p in hashed_roots(c) {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
            println!("cargo:rustc-env=CODE_HASH={hash}");
        }
        Err(e) => panic!("code-hash: {e}"),
    }
}

/// The crate at `dir` and every workspace crate it depends on through a path, sorted.
pub fn crate_closure(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![canonical(dir)?];
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        for dep in path_dependencies(&d)? {
            todo.push(dep);
        }
    }
    Ok(seen.into_iter().collect())
}

/// Hash of the given crate directories' sources. Each crate is named by its package name, so
/// the hash does not depend on where the workspace is checked out.
pub fn hash_crates(crates: &[PathBuf]) -> Result<String, String> {
    let mut h = blake3::Hasher::new();
    h.update(b"code-hash-v1\0");
    for c in crates {
        let name = package_name(c)?;
        h.update(name.as_bytes());
        h.update(b"\0");
        let mut files = Vec::new();
        for root in hashed_roots(c) {
            collect_files(&root, &mut files)?;
        }
        files.sort();
        for f in files {
            let rel = f.strip_prefix(c).unwrap_or(&f);
            let bytes = fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            h.update(rel.to_string_lossy().replace('\\', "/").as_bytes());
            h.update(b"\0");
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

fn hashed_roots(c: &Path) -> Vec<PathBuf> {
    ["Cargo.toml", "build.rs", "src"]
        .iter()
        .map(|p| c.join(p))
        .filter(|p| p.exists())
        .collect()
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let md = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if md.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    for entry in fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", p.display()))?;
        collect_files(&entry.path(), out)?;
    }
    Ok(())
}

fn canonical(p: &Path) -> Result<PathBuf, String> {
    p.canonicalize()
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn read_toml(p: &Path) -> Result<toml::Table, String> {
    let text = fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn package_name(dir: &Path) -> Result<String, String> {
    let t = read_toml(&dir.join("Cargo.toml"))?;
    t.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no package name", dir.join("Cargo.toml").display()))
}

/// The workspace root: the nearest ancestor whose Cargo.toml has a `[workspace]` table.
fn workspace_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|a| {
            read_toml(&a.join("Cargo.toml"))
                .map(|t| t.contains_key("workspace"))
                .unwrap_or(false)
        })
        .map(Path::to_path_buf)
}

fn path_dependencies(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let t = read_toml(&dir.join("Cargo.toml"))?;
    let ws = workspace_root(dir);
    let ws_deps = ws
        .as_ref()
        .and_then(|w| read_toml(&w.join("Cargo.toml")).ok())
        .and_then(|t| t.get("workspace")?.get("dependencies")?.as_table().cloned())
        .unwrap_or_default();
    let mut out = Vec::new();
    // Only normal dependencies change what the crate computes.
    let Some(deps) = t.get("dependencies").and_then(|d| d.as_table()) else {
        return Ok(out);
    };
    for (name, spec) in deps {
        if let Some(p) = spec.get("path").and_then(|p| p.as_str()) {
            out.push(canonical(&dir.join(p))?);
        } else if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
            if let (Some(ws), Some(p)) = (
                ws.as_ref(),
                ws_deps
                    .get(name)
                    .and_then(|s| s.get("path"))
                    .and_then(|p| p.as_str()),
            ) {
                out.push(canonical(&ws.join(p))?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    fn fixture() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            &r.join("Cargo.toml"),
            "[workspace]\nmembers=[\"a\",\"b\"]\n[workspace.dependencies]\nb = { path = \"b\" }\n",
        );
        write(
            &r.join("a/Cargo.toml"),
            "[package]\nname=\"a\"\n[dependencies]\nb = { workspace = true }\n",
        );
        write(&r.join("a/src/lib.rs"), "pub fn f() {}\n");
        write(&r.join("a/tests/t.rs"), "#[test] fn t() {}\n");
        write(&r.join("b/Cargo.toml"), "[package]\nname=\"b\"\n");
        write(&r.join("b/src/lib.rs"), "pub fn g() {}\n");
        t
    }

    fn hash_of(dir: &Path) -> String {
        hash_crates(&crate_closure(dir).unwrap()).unwrap()
    }

    #[test]
    fn closure_follows_workspace_path_dependencies() {
        let t = fixture();
        let names: Vec<String> = crate_closure(&t.path().join("a"))
            .unwrap()
            .iter()
            .map(|c| package_name(c).unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn hash_changes_with_own_source_and_with_used_crate_but_not_with_tests() {
        let t = fixture();
        let a = t.path().join("a");
        let h0 = hash_of(&a);
        assert_eq!(h0, hash_of(&a), "hash is deterministic");
        write(&a.join("tests/t.rs"), "#[test] fn t2() {}\n");
        assert_eq!(h0, hash_of(&a), "tests do not change the code identity");
        write(&a.join("src/lib.rs"), "pub fn f() { let _ = 1; }\n");
        let h1 = hash_of(&a);
        assert_ne!(h0, h1, "own source change");
        write(&t.path().join("b/src/lib.rs"), "pub fn g() { }\n");
        assert_ne!(h1, hash_of(&a), "used crate's source change");
    }

    #[test]
    fn hash_does_not_depend_on_checkout_location() {
        let t1 = fixture();
        let t2 = fixture();
        assert_eq!(hash_of(&t1.path().join("a")), hash_of(&t2.path().join("a")));
    }
}
