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
    assert_eq!(attrs, perch::aws::dynamodb::LISTING_ATTRIBUTES);
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

/// The template's resources of one type, by logical id.
fn resources_of<'a>(t: &'a serde_json::Value, kind: &str) -> Vec<(&'a String, &'a serde_json::Value)> {
    t["Resources"].as_object().unwrap().iter().filter(|(_, r)| r["Type"] == kind).collect()
}

#[test]
fn each_route_is_served_by_the_function_the_local_router_calls() {
    let t = perch_tests::template();
    let mut served = BTreeSet::new();
    for (_, f) in resources_of(&t, "AWS::Serverless::Function") {
        let binary = f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
        for e in f["Properties"]["Events"].as_object().unwrap().values().filter(|e| e["Type"] == "HttpApi") {
            let public = e["Properties"]["Auth"]["Authorizer"] == "NONE";
            let (method, path) =
                (e["Properties"]["Method"].as_str().unwrap(), e["Properties"]["Path"].as_str().unwrap());
            served.insert((method.to_owned(), path.to_owned(), binary.to_owned(), !public));
        }
    }
    let local: BTreeSet<_> = perch_local::ROUTES
        .iter()
        .map(|(m, p, f, jwt)| ((*m).to_owned(), (*p).to_owned(), f.binary().to_owned(), *jwt))
        .collect();
    assert_eq!(served, local, "(method, path, function, behind the JWT authorizer)");
}

#[test]
fn every_function_logs_to_a_group_with_retention_and_has_error_and_throttle_alarms() {
    let t = perch_tests::template();
    let groups: BTreeSet<&String> = resources_of(&t, "AWS::Logs::LogGroup")
        .into_iter()
        .filter(|(_, g)| g["Properties"]["RetentionInDays"] == "LogRetentionDays")
        .map(|(name, _)| name)
        .collect();
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    let alarmed = |namespace: &str, metric: &str, dimension: &str| {
        alarms.iter().any(|(_, a)| {
            let p = &a["Properties"];
            p["Namespace"] == namespace
                && p["MetricName"] == metric
                && p["Dimensions"][0]["Value"] == dimension
                && p["AlarmActions"][0] == "AlarmTopic"
        })
    };
    for (name, f) in resources_of(&t, "AWS::Serverless::Function") {
        let group = f["Properties"]["LoggingConfig"]["LogGroup"].as_str().unwrap_or_default().to_owned();
        assert!(groups.contains(&group), "{name} logs to {group:?}, not a group with LogRetentionDays");
        for metric in ["Errors", "Throttles"] {
            assert!(alarmed("AWS/Lambda", metric, name), "{name} has no {metric} alarm");
        }
    }
    assert!(alarmed("AWS/SQS", "ApproximateNumberOfMessagesVisible", "SweepDeadLetterQueue.QueueName"));
    assert!(alarmed("AWS/ApiGateway", "5xx", "HttpApi"));
    for metric in ["SweepCheckFailures", "SweepRateLimited"] {
        let filtered = resources_of(&t, "AWS::Logs::MetricFilter").iter().any(|(_, m)| {
            let p = &m["Properties"];
            p["LogGroupName"] == "CheckConnectionStatusLogs"
                && p["MetricTransformations"][0]["MetricName"] == metric
                // The filter reads the line perch::flows::sweep logs at the end of every segment run.
                && p["FilterPattern"].as_str().unwrap().contains("\"status check segment done\"")
        });
        assert!(filtered, "no metric filter makes {metric}");
        assert!(alarms.iter().any(|(_, a)| a["Properties"]["MetricName"] == metric), "no alarm on {metric}");
    }
    // A configuration error at the code exchange (the callback answers the employer, so no
    // 5xx or Lambda error would show it) is alarmed from its log line.
    let filtered = resources_of(&t, "AWS::Logs::MetricFilter").iter().any(|(_, m)| {
        let p = &m["Properties"];
        p["LogGroupName"] == "OauthCallbackLogs"
            && p["MetricTransformations"][0]["MetricName"] == "ConfigurationErrors"
            && p["FilterPattern"].as_str().unwrap().contains("$.fields.alarm = \"configuration_error\"")
    });
    assert!(filtered, "no metric filter makes ConfigurationErrors");
    assert!(alarms.iter().any(|(_, a)| a["Properties"]["MetricName"] == "ConfigurationErrors"));
    let callback =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/src/flows/callback.rs")).unwrap();
    assert!(callback.contains("alarm = \"configuration_error\""), "the line the filter reads");
    let sweep =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/src/flows/sweep/segment.rs")).unwrap();
    assert!(sweep.contains("\"status check segment done\"") && sweep.contains("rate_limited = report.rate_limited"));
}
