//! The crate's module graph, read from the `use crate::` (and `super::`)
//! paths in `src/`, checked against the layering `docs/design.md` draws:
//!
//! * **The data floor imports nothing above it.** The spans, central lists,
//!   huge-page records, page heap, span-record pool and free-list codec
//!   never name `global`, `raw`, `block`, `config` or `mesh`: what they need
//!   from the process (the link encoding, mesh mode's slot choice, spans,
//!   the clock) comes through the `SpanSource` they are given.
//! * **No import cycle** but through the runtime doors ([`DOORS`]: the
//!   background thread and the C library's hooks). The rooms of one module
//!   (`page_heap` and `page_heap::release`: a parent and its child) may call
//!   each other; siblings may not.
//! * **The allocator rings the doorbell**: no module but the hooks and the
//!   statistics imports `background`; slow paths signal the thread through
//!   the `doorbell` leaf.
//!
//! Comments and `#[cfg(test)] mod` blocks at the end of a file are not
//! read (unit tests may reach anywhere); `src/fuzz/` is test scaffolding
//! and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules of the data floor.
const DATA_FLOOR: &[&str] = &[
    "span",
    "central",
    "huge",
    "huge::filler",
    "huge::set",
    "page_heap",
    "page_heap::mesh",
    "page_heap::release",
    "span_pool",
    "freelist",
];

/// Modules (and their submodules) the data floor must not import.
const ABOVE_THE_FLOOR: &[&str] = &["global", "raw", "block", "config", "mesh"];

/// The runtime doors: the code that runs on the allocator's behalf
/// outside the program's calls (the background thread) and the C library's
/// callbacks into the allocator (thread exit, fork). They call down into
/// the floors, and the floors reach them only to install or start them, so
/// a cycle through a door is by design. Everywhere else the graph must be
/// a DAG.
const DOORS: &[&str] = &["background", "hooks"];

/// Who may import the background thread's module: the hooks (which
/// register its starter and reset it after `fork`) and the statistics. The
/// allocator's paths ring the doorbell instead.
const BACKGROUND_IMPORTERS: &[&str] = &["hooks", "stats"];

/// Whether `m` is `of` or one of its submodules (its rooms).
fn within(m: &str, of: &str) -> bool {
    m == of || m.strip_prefix(of).is_some_and(|r| r.starts_with("::"))
}

/// Whether one of `a` and `b` is the other's parent module (a `mod.rs`
/// and a file of it: one module's rooms).
fn parent_and_child(a: &str, b: &str) -> bool {
    let parent = |m: &str| m.rsplit_once("::").map(|(p, _)| p.to_string());
    parent(a).as_deref() == Some(b) || parent(b).as_deref() == Some(a)
}

/// Module path (`a::b`) of every `.rs` file under `src/`, with its text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace('/', "::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_string();
                }
                if name == "lib" {
                    name = String::new();
                }
                out.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The text that counts: comments dropped, and the file cut at a
/// `#[cfg(test)]` line followed by a `mod` (the unit tests).
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let next_is_mod = lines
            .get(i + 1)
            .is_some_and(|l| l.trim_start().starts_with("mod "));
        if line.trim() == "#[cfg(test)]" && next_is_mod {
            break;
        }
        out.push_str(line.split("//").next().unwrap());
        out.push('\n');
    }
    out
}

/// The longest module of `mods` that `path` (`a::b::item`) names.
fn resolve(path: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

/// Paths following `prefix` in `code`, with `prefix::{a, b::c}` groups
/// expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|s| s.trim().to_string()));
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Every module's imports of other modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut graph = BTreeMap::new();
    for (name, text) in &mods {
        if name.is_empty() || name == "fuzz" || name.starts_with("fuzz::") {
            continue;
        }
        let code = code(text);
        // `super::` from `a::b` (a file) means `a`; from `a` (a `mod.rs`)
        // it means the crate root, which this graph leaves out.
        let parent = name.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut edges = BTreeSet::new();
        for p in paths_after(&code, "crate::") {
            edges.extend(resolve(&p, &mods));
        }
        // A module's own `use child::...` (a `mod.rs` re-exporting its
        // rooms) reaches the child.
        for p in paths_after(&code, "use ")
            .into_iter()
            .chain(paths_after(&code, "self::"))
        {
            if let Some(child) = resolve(&format!("{name}::{p}"), &mods) {
                if child.len() > name.len() {
                    edges.insert(child);
                }
            }
        }
        if let Some(parent) = &parent {
            for p in paths_after(&code, "super::") {
                edges.extend(resolve(&format!("{parent}::{p}"), &mods));
            }
        }
        edges.retain(|e| e != name && !e.is_empty() && e != "fuzz");
        graph.insert(name.clone(), edges);
    }
    graph
}

/// The graph's strongly connected components with more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Two modules share a cycle when each reaches the other.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for e in graph.get(&m).into_iter().flatten() {
                if seen.insert(e.clone()) {
                    stack.push(e.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for m in graph.keys() {
        if out.iter().any(|c| c.contains(m)) {
            continue;
        }
        let scc: BTreeSet<String> = reaches[m]
            .iter()
            .filter(|o| *o == m || reaches.get(o).is_some_and(|r| r.contains(m)))
            .cloned()
            .collect();
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

#[test]
fn the_data_floor_imports_nothing_above_it() {
    let graph = graph();
    let mut bad = Vec::new();
    for m in DATA_FLOOR {
        let edges = graph.get(*m).unwrap_or_else(|| panic!("no module {m}"));
        for e in edges {
            let top = e.split("::").next().unwrap();
            if ABOVE_THE_FLOOR.contains(&top) {
                bad.push(format!("{m} -> {e}"));
            }
        }
    }
    assert!(bad.is_empty(), "data floor imports from above: {bad:?}");
}

#[test]
fn no_import_cycle_but_through_the_doors() {
    let mut graph = graph();
    assert!(graph.len() > 20, "read only {} modules", graph.len());
    // Without the doors, and without a module's rooms calling each other.
    graph.retain(|m, _| !DOORS.iter().any(|d| within(m, d)));
    for (m, edges) in graph.iter_mut() {
        edges.retain(|e| !DOORS.iter().any(|d| within(e, d)) && !parent_and_child(e, m));
    }
    let bad = cycles(&graph);
    assert!(bad.is_empty(), "import cycles not through a door: {bad:?}");
}

#[test]
fn the_allocator_rings_the_doorbell_instead_of_importing_the_thread() {
    let graph = graph();
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(m, edges)| {
            !within(m, "background")
                && !BACKGROUND_IMPORTERS.contains(&m.as_str())
                && edges.iter().any(|e| within(e, "background"))
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        importers.is_empty(),
        "modules import the background thread: {importers:?}"
    );
}

#[test]
fn the_reader_sees_grouped_and_nested_paths() {
    let code = code(
        "use crate::{cache, large};\n// use crate::raw;\nlet x = crate::huge::filler::f();\n\
         #[cfg(test)]\nmod tests { use crate::global; }\n",
    );
    let paths = paths_after(&code, "crate::");
    assert_eq!(paths, ["cache", "large", "huge::filler::f"]);
    let uses = paths_after("pub use control::{a, b};\nuse crate::x;\n", "use ");
    assert_eq!(uses, ["control", "crate::x"]);
}
