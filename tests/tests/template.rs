//! `template.yaml` and the code describe the same Perch: routes, binaries, table.

use std::collections::BTreeSet;

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).expect("template.yaml")
}

/// `(METHOD, /path)` of every HttpApi event, read from the template's `Path:`/`Method:` lines.
fn template_routes(t: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut path: Option<String> = None;
    for line in t.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix("Path: ") {
            path = Some(p.to_owned());
        } else if let Some(m) = line.strip_prefix("Method: ")
            && let Some(p) = path.take()
        {
            out.insert((m.to_owned(), p));
        }
    }
    out
}

#[test]
fn local_router_serves_exactly_the_template_routes() {
    let local: BTreeSet<(String, String)> =
        perch_local::ROUTES.iter().map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(template_routes(&template()), local);
}

#[test]
fn every_function_binary_is_built_by_the_template_under_a_unique_name() {
    let t = template();
    let binaries: Vec<&str> = t.lines().filter_map(|l| l.trim().strip_prefix("Binary: ")).collect();
    let unique: BTreeSet<&str> = binaries.iter().copied().collect();
    assert_eq!(unique.len(), binaries.len(), "binary names must be unique");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");
    let mut packages = BTreeSet::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let manifest = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let name = manifest.lines().find_map(|l| l.strip_prefix("name = \"")).unwrap().trim_end_matches('"').to_owned();
        packages.insert(name);
    }
    assert_eq!(unique.into_iter().map(str::to_owned).collect::<BTreeSet<_>>(), packages);
    assert!(
        t.contains("BuildMethod: rust-cargolambda")
            && t.contains("Runtime: provided.al2023")
            && t.contains("Architectures: [arm64]")
    );
}

#[test]
fn the_table_index_projects_exactly_the_listing_attributes() {
    let t = template();
    let after = t.split("NonKeyAttributes:").nth(1).expect("NonKeyAttributes");
    let attrs: Vec<&str> = after.lines().skip(1).map_while(|l| l.trim().strip_prefix("- ")).collect();
    assert_eq!(attrs, perch::store::LISTING_ATTRIBUTES);
    assert!(!attrs.contains(&"token_ciphertext"));
    assert!(t.contains("IndexName: by_customer") && t.contains("AttributeName: expires_at"));
    assert!(t.contains("PointInTimeRecoveryEnabled: true") && t.contains("EnableKeyRotation: true"));
}

#[test]
fn the_vendored_finch_spec_is_finchs() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/finch/openapi.json");
    match std::fs::read_to_string(shared) {
        Ok(original) => {
            assert_eq!(original, finch_emulator::spec::OPENAPI_JSON, "re-copy ../shared/finch/openapi.json")
        }
        // Outside the workplace (no ../shared beside the repo) there is nothing to compare with.
        Err(_) => assert!(finch_emulator::spec::OPENAPI_JSON.contains("\"2020-09-17\"")),
    }
}
