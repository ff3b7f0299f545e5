//! The README's configuration table, the code and `template.yaml` name the same settings.
//!
//! The variables the code reads are found by running its configuration loaders with a lookup
//! that records what it is asked for (and, for the binaries' own `std::env::var` reads, by
//! scanning their source); the template's parameters and environment come from the template.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use perch::Config;
use perch::flows::sweep::SweepSettings;

/// A complete, valid function environment.
fn valid() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("TABLE_NAME", "perch"),
        ("KMS_KEY_ID", "alias/perch"),
        ("FINCH_SECRET_ID", "perch/finch"),
        ("FINCH_REDIRECT_URI", "https://api.example.com/connect/callback"),
        ("APP_RETURN_URL", "https://app.example.com/connections"),
    ])
}

/// Every variable `Config`, `SweepSettings` and `SyncSettings` ask for, and those without which `Config` fails.
fn loader_variables() -> (BTreeSet<String>, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let env = valid();
    let lookup = |k: &str| {
        asked.borrow_mut().insert(k.to_owned());
        env.get(k).map(|v| (*v).to_owned())
    };
    Config::from_lookup(lookup).expect("the valid environment loads");
    SweepSettings::from_lookup(lookup).expect("sweep defaults load");
    perch::flows::sync::SyncSettings::from_lookup(lookup).expect("sync defaults load");
    let required = env
        .keys()
        .filter(|k| Config::from_lookup(|q| if q == **k { None } else { env.get(q).map(|v| (*v).to_owned()) }).is_err())
        .map(|k| (*k).to_owned())
        .collect();
    (asked.into_inner(), required)
}

/// `std::env::var("X")` (or a `var("X")` helper) reads in the source of telemetry and perch-local.
fn direct_reads() -> BTreeSet<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let re = regex::Regex::new(r#"\bvar\("([A-Z0-9_]+)"\)"#).unwrap();
    [
        "shared/src/runtime/telemetry.rs",
        "infra/local/src/main.rs",
        "infra/local/src/lib.rs",
        "infra/local/src/worker.rs",
    ]
    .iter()
    .flat_map(|f| {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        re.captures_iter(&text).map(|c| c[1].to_owned()).collect::<Vec<_>>()
    })
    .collect()
}

/// The README's configuration rows: each name → its "where" column.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells.len(), 4, "a row of four cells: {line}");
        for name in cells[0].trim_start_matches("| ").split(" / ") {
            rows.insert(name.trim_matches('`').to_owned(), cells[1].to_owned());
        }
    }
    rows
}

/// Each function's environment in the template (Globals merged under its own).
fn template_environments(t: &serde_json::Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let globals = t["Globals"]["Function"]["Environment"]["Variables"].as_object().unwrap();
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(name, r)| {
            let own = r["Properties"]["Environment"]["Variables"].as_object().cloned().unwrap_or_default();
            let vars = globals
                .iter()
                .chain(own.iter())
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect();
            (name.clone(), vars)
        })
        .collect()
}

#[test]
fn the_readme_documents_every_variable_the_code_reads_and_nothing_else() {
    let (asked, _) = loader_variables();
    let code: BTreeSet<String> = asked.into_iter().chain(direct_reads()).collect();
    let rows = readme_rows();
    let documented: BTreeSet<String> =
        rows.iter().filter(|(_, w)| !w.starts_with("parameter")).map(|(n, _)| n.clone()).collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "read by the code, not in README's Configuration: {missing:?}");
    assert!(stale.is_empty(), "in README's Configuration, read by nothing: {stale:?}");
}

#[test]
fn the_readme_documents_every_template_parameter_and_where_it_goes() {
    let t = perch_tests::template();
    let params: BTreeSet<String> = t["Parameters"].as_object().unwrap().keys().cloned().collect();
    let rows = readme_rows();
    let documented: BTreeSet<String> =
        rows.iter().filter(|(_, w)| w.starts_with("parameter")).map(|(n, _)| n.clone()).collect();
    assert_eq!(params, documented, "template parameters vs README rows marked 'parameter'");
    // "parameter → `X`": the template sets variable X of every function from that parameter.
    for env in template_environments(&t).values() {
        for (param, place) in &rows {
            if let Some(var) = place.strip_prefix("parameter → ") {
                assert_eq!(env.get(var.trim_matches('`')), Some(param), "{var} is set from {param}");
            }
        }
    }
}

#[test]
fn the_template_sets_every_required_variable_and_only_variables_the_code_reads() {
    let (asked, required) = loader_variables();
    assert!(required.contains("KMS_KEY_ID") && required.contains("FINCH_REDIRECT_URI"), "{required:?}");
    for (function, env) in template_environments(&perch_tests::template()) {
        for var in &required {
            assert!(env.contains_key(var), "{function} lacks {var}: it would refuse to start");
        }
        for var in env.keys() {
            assert!(asked.contains(var), "{function} sets {var}, which nothing reads");
        }
    }
}

#[test]
fn a_bad_value_is_refused_naming_the_variable() {
    for (var, bad) in [
        ("TABLE_NAME", ""),
        ("FINCH_API_URL", "ftp://finch"),
        ("FINCH_REDIRECT_URI", "not a url"),
        ("FINCH_TIMEOUT_MS", "0"),
        ("FINCH_MAX_RETRIES", "-1"),
        ("SECRET_CACHE_TTL_SECONDS", "a day"),
        ("PREWARM_CONNECTIONS", "yes"),
    ] {
        let mut env = valid();
        env.insert(var, bad);
        let err = Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).unwrap_err();
        assert!(err.to_string().contains(var), "{var}={bad:?}: {err}");
    }
    for (var, bad) in [("SWEEP_BUDGET_REQUESTS", "0"), ("SWEEP_IN_FLIGHT", "100000"), ("SWEEP_SEGMENTS", "x")] {
        let err = SweepSettings::from_lookup(|k| (k == var).then(|| bad.to_owned())).unwrap_err();
        assert!(err.to_string().contains(var), "{var}={bad:?}: {err}");
    }
}

/// The benchmark's `bench-tls` feature (its functions also trust a loopback certificate
/// authority, `perch::config::bench_ca`) is enabled by nothing that builds what ships: no
/// manifest but the one defining it names it, it is not a default feature, the template and
/// every script but the benchmark's leave it alone, and the benchmark builds it into a target
/// directory of its own, so no release binary of the shared target directory ever has it.
#[test]
fn no_shipped_build_trusts_the_benchmarks_certificate_authority() {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = vec![root.join("template.yaml"), root.join(".ci/run"), root.join("Cargo.toml")];
    for dir in ["functions", "infra", "scripts", "bench", "tests", "fuzz", "shared", "web"] {
        let mut dirs = vec![root.join(dir)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
                let p = e.path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if p.is_dir() && !["node_modules", "target", ".venv", "src"].contains(&name.as_str()) {
                    dirs.push(p);
                } else if name == "Cargo.toml" || name.ends_with(".sh") || name == "samconfig.toml" {
                    files.push(p);
                }
            }
        }
    }
    let shared = root.join("shared/Cargo.toml");
    assert!(files.contains(&shared) && files.iter().any(|f| f.ends_with("scripts/build-lambdas.sh")), "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("bench-tls")).collect();
        if f == &shared {
            assert!(lines.iter().any(|l| l.starts_with("bench-tls = []")), "the feature is defined: {lines:?}");
            let default = text.lines().find(|l| l.starts_with("default ="));
            assert!(default.is_none_or(|d| !d.contains("bench-tls")), "bench-tls is a default feature");
        } else if f.ends_with("scripts/bench.sh") {
            for l in lines.iter().filter(|l| l.contains("--features")) {
                assert!(l.contains("--target-dir") && !l.contains("target/release"), "its own target directory: {l}");
            }
        } else {
            assert!(lines.is_empty(), "{} names bench-tls: {lines:?}", f.display());
        }
    }
}
