//! The house rules, checked: every `crate::` path in a module's code must be allowed by the
//! README's code map ("may depend on"), every module in `lib.rs` must have a row there, and the
//! modules' actual imports must not form a circle. Test-only; it reads the sources and the
//! README, so a rule broken in either fails `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a row of the code map allows a module to use of ours.
#[derive(Debug)]
enum Allowed {
    /// "everything".
    All,
    /// The listed paths: `io` allows every `crate::io::…`, `io::atomic` only `crate::io::atomic…`.
    Paths(Vec<Vec<String>>),
}

impl Allowed {
    fn permits(&self, path: &[String]) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Paths(paths) => paths.iter().any(|p| path.starts_with(p)),
        }
    }
}

/// The top-level modules `lib.rs` declares.
fn top_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// The code map's rows: module → what it may depend on. A row names its modules as `src/X/`
/// or `src/X.rs` in its first column; the third column lists ours in backticks (`state`,
/// `io::atomic`), or says "everything".
fn code_map(readme: &str, modules: &BTreeSet<String>) -> BTreeMap<String, Allowed> {
    let section = readme.split("## Code map").nth(1).expect("the README has a \"## Code map\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `src/")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 3, "a code-map row without three columns: {line}");
        let may = cells[cells.len() - 1].trim_end_matches('|').trim();
        let allowed = if may.contains("everything") {
            Allowed::All
        } else {
            let paths = may
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|tick| tick.split("::").map(str::to_owned).collect::<Vec<_>>())
                .filter(|p| modules.contains(&p[0]))
                .collect();
            Allowed::Paths(paths)
        };
        let names: Vec<String> = cells[0]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|t| t.strip_prefix("src/"))
            .filter_map(|t| t.strip_suffix('/').or_else(|| t.strip_suffix(".rs")))
            .filter(|t| modules.contains(*t))
            .map(str::to_owned)
            .collect();
        for name in names {
            let before = map.insert(
                name.clone(),
                match &allowed {
                    Allowed::All => Allowed::All,
                    Allowed::Paths(p) => Allowed::Paths(p.clone()),
                },
            );
            assert!(before.is_none(), "the code map has two rows for `src/{name}`");
        }
    }
    map
}

/// The Rust files of top-level module `name`.
fn files_of(src: &Path, name: &str) -> Vec<PathBuf> {
    let dir = src.join(name);
    if !dir.is_dir() {
        return vec![src.join(format!("{name}.rs"))];
    }
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every `crate::a::b…` path in `code` outside comments, as its leading lower-case segments
/// (modules and functions: `crate::io::stack::OpenOptions` → `[io, stack]`).
fn crate_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    for (i, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let preceded = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let segments: Vec<String> = rest
                .split("::")
                .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
                .collect();
            if !segments.is_empty() {
                found.push((i + 1, segments));
            }
        }
    }
    found
}

/// A circle in `edges`, if there is one, as the modules along it.
fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_uses_only_what_the_code_map_allows_and_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let modules: BTreeSet<String> = top_modules(&lib).into_iter().filter(|m| m != "architecture").collect();
    let map = code_map(&readme, &modules);
    let mut broken = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &modules {
        let Some(allowed) = map.get(name) else {
            broken.push(format!("`src/{name}` has no row in the README's code map"));
            continue;
        };
        for file in files_of(&src, name) {
            let code = std::fs::read_to_string(&file).unwrap();
            for (line, path) in crate_paths(&code) {
                if path[0] == *name {
                    continue;
                }
                edges.entry(name.clone()).or_default().insert(path[0].clone());
                if !allowed.permits(&path) {
                    broken.push(format!(
                        "{}:{line}: `crate::{}` is not in `{name}`'s \"may depend on\" ({allowed:?})",
                        file.strip_prefix(root).unwrap_or(&file).display(),
                        path.join("::")
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "the code map is broken:\n{}", broken.join("\n"));
    if let Some(circle) = find_circle(&edges) {
        panic!("modules import each other in a circle: {}", circle.join(" → "));
    }
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // Paths are found outside comments only, with their module segments.
    let code = "use crate::io::stack::OpenOptions; // crate::ui\nlet x = crate::model::device::cpu();\n/// crate::app";
    let paths: Vec<Vec<String>> = crate_paths(code).into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, [vec!["io", "stack"], vec!["model", "device", "cpu"]]);
    // `io::atomic` allows that room only.
    let modules: BTreeSet<String> = ["io", "model", "state"].map(str::to_owned).into();
    let map = code_map(
        "## Code map\n| a | b | c |\n|---|---|---|\n| `src/model/` | m | burn (and `io::atomic`) |\n| `src/state/` | s | nothing of ours |\n\n## Next\n",
        &modules,
    );
    let seg = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert!(map["model"].permits(&seg("io::atomic")));
    assert!(!map["model"].permits(&seg("io::stack")));
    assert!(!map["state"].permits(&seg("io")));
    // A circle is found and named.
    let edges: BTreeMap<String, BTreeSet<String>> = [("app", "cli"), ("cli", "app"), ("io", "state")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), BTreeSet::from([b.to_owned()])))
        .collect();
    assert_eq!(find_circle(&edges).unwrap(), ["app", "cli", "app"]);
    let edges: BTreeMap<String, BTreeSet<String>> = [("app", "cli"), ("io", "state")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), BTreeSet::from([b.to_owned()])))
        .collect();
    assert!(find_circle(&edges).is_none());
}
