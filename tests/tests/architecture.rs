//! The shared crate's dependency rule, checked on its source (see `shared/src/lib.rs`):
//!
//! - AWS SDK types (`aws_sdk_*`, `aws_config`, `aws_smithy_*`) are named only in the AWS
//!   adapters (`aws/`), the wiring (`runtime/`), and the functions' `main.rs` (the Lambda event
//!   types are not the SDK: the HTTP edge and the sweep's handler read them);
//! - the HTTP edge (`http/`, `lambda_http`) is imported by no module below it;
//! - each module imports only modules of its own layer or below, and no two files import each
//!   other, directly or through others (no cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use perch_tests::rust_files;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/src");
const FUNCTIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");

/// Each top-level module of the shared crate and its layer (lib.rs's list).
const LAYERS: &[(&str, u8)] = &[
    ("domain", 1),
    ("lazy", 1),
    ("config", 2),
    ("store", 3),
    ("crypto", 3),
    ("secrets", 3),
    ("events", 3),
    ("queue", 3),
    ("finch", 3),
    ("app", 4),
    ("flows", 5),
    ("aws", 6),
    ("memory", 6),
    ("http", 7),
    ("runtime", 8),
];

/// Modules allowed to name AWS SDK types.
const SDK_ALLOWED: &[&str] = &["aws", "runtime"];
const SDK_CRATES: &[&str] = &["aws_sdk_", "aws_config", "aws_smithy_"];

/// A file's module path in the crate: `flows/sweep/mod.rs` → `flows::sweep`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(SHARED).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod" && *p != "lib").collect();
    parts.join("::")
}

/// The code of a file without its `#[cfg(test)]` module and comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::a::b…` path a file names, as the longest prefix that is a module (a file).
fn crate_imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let re = regex::Regex::new(r"crate::([a-z_]+(?:::[a-z_]+)*)").unwrap();
    let mut out = BTreeSet::new();
    for c in re.captures_iter(code) {
        let segs: Vec<&str> = c[1].split("::").collect();
        let found = (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| modules.contains(m));
        if let Some(m) = found {
            out.insert(m);
        }
    }
    // `use super::…` stays inside the module's own parent: never a layer crossing.
    out
}

fn layer(module: &str) -> u8 {
    let top = module.split("::").next().unwrap();
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l).unwrap_or_else(|| panic!("{module} has no layer"))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(Path::new(SHARED));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).filter(|m| !m.is_empty()).collect();
    files
        .iter()
        .filter(|f| !module_of(f).is_empty())
        .map(|f| {
            let m = module_of(f);
            let deps = crate_imports(&code(f), &modules).into_iter().filter(|d| *d != m).collect();
            (m, deps)
        })
        .collect()
}

#[test]
fn every_top_level_module_has_a_layer_and_lib_rs_lists_them_in_order() {
    let lib = std::fs::read_to_string(Path::new(SHARED).join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let layered: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    assert_eq!(declared.iter().collect::<BTreeSet<_>>(), layered.iter().collect::<BTreeSet<_>>());
    let ranks: Vec<u8> = declared.iter().map(|m| layer(m)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "lib.rs declares the modules bottom-up: {declared:?}");
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let mut problems = Vec::new();
    for (m, deps) in graph() {
        for d in deps {
            if layer(&d) > layer(&m) {
                problems.push(format!("{m} (layer {}) imports {d} (layer {})", layer(&m), layer(&d)));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_http_edge_is_imported_by_nothing_below_it() {
    for file in rust_files(Path::new(SHARED)) {
        let m = module_of(&file);
        if m.starts_with("http") || m.starts_with("runtime") || m.is_empty() {
            continue;
        }
        let c = code(&file);
        assert!(!c.contains("crate::http") && !c.contains("lambda_http"), "{m} knows HTTP");
    }
}

#[test]
fn aws_sdk_types_are_named_only_in_the_adapters_and_the_wiring() {
    let mut named = Vec::new();
    for file in rust_files(Path::new(SHARED)) {
        let m = module_of(&file);
        let top = m.split("::").next().unwrap_or("");
        if SDK_ALLOWED.contains(&top) {
            continue;
        }
        let c = code(&file);
        for sdk in SDK_CRATES {
            if c.contains(sdk) {
                named.push(format!("{m} names {sdk}*"));
            }
        }
    }
    // A function's handler is an edge; its main.rs is wiring.
    for file in rust_files(Path::new(FUNCTIONS)) {
        if file.file_name().is_some_and(|n| n == "main.rs") {
            continue;
        }
        let c = code(&file);
        for sdk in SDK_CRATES {
            if c.contains(sdk) {
                named.push(format!("{} names {sdk}*", file.display()));
            }
        }
    }
    assert!(named.is_empty(), "{named:#?}");
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| *s == m) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m);
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m);
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_checks_see_what_they_check() {
    // A rule over an empty graph passes trivially: make sure the scan finds real edges.
    let g = graph();
    assert!(g["flows::callback"].contains("app"), "{:?}", g["flows::callback"]);
    assert!(g["runtime::wiring"].contains("aws::kms"));
    assert!(g.len() > 30, "{} modules", g.len());
}
