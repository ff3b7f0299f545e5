//! `perch-admin` on the local stack (seed 000: every team can disconnect): an operator lists a
//! customer's connections, shows one (never its token), disconnects one, and disconnects all
//! of a customer's — paced, reported, and finished by running it again after a failure.

use perch_admin::{Command, parse, run};
use perch_tests::TestStack;
use serde_json::Value;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

async fn admin(stack: &TestStack, line: &str) -> (Value, bool, String) {
    let command = parse(&args(line)).expect("a valid command line");
    let mut progress = Vec::new();
    let answer = run(&stack.app, command, &mut progress).await.expect("the command runs");
    (answer.output, answer.complete, String::from_utf8(progress).unwrap())
}

/// No token the emulator issued appears in `text`, nor a ciphertext.
fn no_token(stack: &TestStack, text: &str) {
    for t in stack.issued_tokens() {
        assert!(!text.contains(&t), "an operator's output carries a token");
    }
    assert!(!text.contains("ciphertext"));
}

#[tokio::test]
async fn an_operator_lists_shows_and_disconnects_a_customers_connections() {
    let stack = TestStack::start().await;
    let ids = stack.seed("acme", 4).await;
    let other = stack.seed("globex", 1).await;

    let (listed, complete, _) = admin(&stack, "connections list --customer acme").await;
    assert!(complete);
    let listed_ids: Vec<&str> =
        listed["connections"].as_array().unwrap().iter().filter_map(|c| c["connection_id"].as_str()).collect();
    assert_eq!(listed_ids.len(), 4);
    assert!(ids.iter().all(|id| listed_ids.contains(&id.as_str())));
    no_token(&stack, &listed.to_string());

    let (shown, _, _) = admin(&stack, &format!("connections show {}", ids[0])).await;
    assert_eq!((shown["customer_id"].as_str(), shown["token_held"].as_bool()), (Some("acme"), Some(true)));
    assert!(shown["token_key_id"].as_str().is_some_and(|k| k.starts_with("arn:aws:kms:")));
    no_token(&stack, &shown.to_string());

    // One, whoever's it is: the API's disconnect, Finch told.
    let (one, complete, _) = admin(&stack, &format!("connections disconnect {}", ids[0])).await;
    assert_eq!((one["disconnected"].as_str(), complete), (Some("now"), true));
    assert!(stack.finch.shared.world().connections[&ids[0]].disconnected);
    let (shown, _, _) = admin(&stack, &format!("connections show {}", ids[0])).await;
    assert_eq!((shown["token_held"].as_bool(), shown["status"].as_str()), (Some(false), Some("disconnected")));
    assert!(shown["disconnected_at"].is_string());

    // All of acme's: Finch fails one of them for good this run (3 attempts), the report says
    // which, and running it again finishes the job.
    stack.inject(serde_json::json!({"path": "/disconnect", "status": 500, "times": 3}));
    let (report, complete, progress) =
        admin(&stack, "connections disconnect --customer acme --all --per-second 1000").await;
    assert!(!complete, "{report}");
    assert_eq!(report["disconnected"], 2);
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].as_str().unwrap().contains("500"), "{report}");
    assert_eq!(progress.lines().count(), 3, "a line per connection: {progress}");
    assert!(progress.contains("failed"));
    let (again, complete, _) = admin(&stack, "connections disconnect --customer acme --all --per-second 1000").await;
    assert!(complete, "{again}");
    assert_eq!((again["disconnected"].as_u64(), again["failed"].as_array().map(Vec::len)), (Some(1), Some(0)));
    let (listed, _, _) = admin(&stack, "connections list --customer acme").await;
    assert_eq!(listed["connections"], serde_json::json!([]));
    let at_finch = stack.finch.shared.world().connections.clone();
    assert!(ids.iter().all(|id| at_finch[id].disconnected), "every one of acme's revoked at Finch");
    assert!(!at_finch[&other[0]].disconnected, "globex's untouched");
    // Nothing left: a run finds nothing to do.
    let (nothing, complete, _) = admin(&stack, "connections disconnect --customer acme --all").await;
    assert!(complete);
    assert_eq!((nothing["disconnected"].as_u64(), nothing["already"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test]
async fn unknown_connections_and_bad_command_lines_are_refused_clearly() {
    let stack = TestStack::start().await;
    let command = parse(&args("connections show never-existed")).unwrap();
    let e = run(&stack.app, command, &mut Vec::new()).await.err().expect("an unknown connection is an error");
    assert!(matches!(e, perch::Error::NotFound("connection")), "{e:?}");
    for bad in [
        "",
        "connections",
        "connections list",
        "connections list --customer acme#1",
        "connections disconnect --customer acme",
        "connections disconnect --customer acme --all --per-second 0",
        "connections disconnect --customer acme --all --per-second many",
        "connections show --customer",
        "reencrypt",
        "people forget",
        "people forget --customer acme",
        "people forget --customer acme --all",
    ] {
        let e = parse(&args(bad)).expect_err(bad);
        assert!(e.contains("usage:"), "{bad}: {e}");
    }
    assert_eq!(
        parse(&args("connections disconnect --customer acme --all")).unwrap(),
        Command::DisconnectAll { customer: perch::domain::CustomerId::parse("acme").unwrap(), per_second: 2.0 }
    );
    assert_eq!(
        parse(&args("people forget --customer acme p-1")).unwrap(),
        Command::Forget { customer: perch::domain::CustomerId::parse("acme").unwrap(), person_id: "p-1".into() }
    );
}

/// On the stack (DynamoDB through the real SDK): an operator forgets a synced person; their
/// records leave the store and the index, and the report says what went.
#[tokio::test]
async fn an_operator_forgets_a_person_and_the_report_says_what_was_removed() {
    let stack = TestStack::start_syncing(|_| {}).await;
    let acme = stack.token("acme");
    let id = stack.connect_with("acme", &["company", "directory", "individual", "employment"]).await;
    stack.run_sync_queue().await;
    let people: Value = stack.get("/people?limit=1", Some(&acme)).await.json().await.unwrap();
    let person = people["people"][0]["person_id"].as_str().expect("indexed").to_owned();
    let individual = people["people"][0]["sources"][0]["individual_id"].as_str().unwrap().to_owned();

    let (report, complete, _) = admin(&stack, &format!("people forget --customer acme {person}")).await;
    assert!(complete, "{report}");
    assert_eq!(report["sources"][0]["outcome"], "removed");
    assert_eq!(report["sources"][0]["removed"], serde_json::json!({"directory": 1, "employment": 1, "individual": 1}));
    assert_eq!(report["index"]["persons"], 1);
    let r = stack.get(&format!("/people/{person}"), Some(&acme)).await;
    assert_eq!(r.status(), 404);
    let employees: Value =
        stack.get(&format!("/connections/{id}/employees?limit=500"), Some(&acme)).await.json().await.unwrap();
    // (Others' records may still name them as their manager: an id, in the others' data.)
    let listed = employees["employees"].as_array().unwrap();
    assert!(
        !listed.is_empty() && listed.iter().all(|e| e["individual_id"] != individual.as_str()),
        "gone from the connection's people"
    );
    let command = parse(&args(&format!("people forget --customer acme {person}"))).unwrap();
    let again = run(&stack.app, command, &mut Vec::new()).await.err().expect("nobody left");
    assert!(matches!(again, perch::Error::NotFound("person")), "{again:?}");
}
