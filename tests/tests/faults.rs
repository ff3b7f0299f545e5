//! Fault injection on the local stack. AWS faults come from a proxy in front of the emulators
//! (real SDK, real error shapes); Finch faults from the emulator. For each: the caller gets a
//! clear error, no token is lost or written in plaintext, no connection is duplicated, and a
//! retry completes the work.

use perch_tests::aws_faults::AwsFault;
use perch_tests::{TestStack, captured_logs, location, query};
use serde_json::{Value, json};

/// Runs a redirect flow for `customer` up to and including the callback; returns its answer.
async fn connect_attempt(stack: &TestStack, customer: &str) -> reqwest::Response {
    let cb = stack.callback_url_for(customer, json!({"products": ["company"]})).await;
    stack.get(&cb, None).await
}

/// A problem's status and code; a failed browser callback, which goes back to the app, as 302
/// and its `reason`.
async fn code_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    if status == 302 {
        let back = location(&r);
        return (302, query(&back, "reason").unwrap_or_default());
    }
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["code"].as_str().unwrap_or_default().to_owned())
}

/// The retry a user makes after a failed callback: connect again, which re-authenticates the
/// connection Finch already made, and completes.
async fn retry_connect(stack: &TestStack, customer: &str) -> String {
    let r = connect_attempt(stack, customer).await;
    assert_eq!(r.status(), 302);
    let back = location(&r);
    query(&back, "connection_id").unwrap()
}

fn assert_no_plaintext(
    stack: &TestStack,
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) {
    let dump = format!("{item:?}");
    for t in stack.issued_tokens() {
        assert!(!dump.contains(&t), "plaintext token in DynamoDB");
    }
}

#[tokio::test]
async fn kms_down_during_the_callback_loses_nothing_and_a_retry_recovers() {
    let stack = TestStack::start_with_aws_faults().await;
    let aws = stack.aws.clone().unwrap();
    // Long enough for both tries: the encryption made while Finch is asked, and the one in
    // order after it failed (3 SDK attempts each).
    aws.inject(AwsFault { times: 6, ..AwsFault::outage("TrentService.Encrypt", 500, "KMSInternalException") });
    let (status, code) = code_of(connect_attempt(&stack, "acme").await).await;
    assert_eq!((status, code.as_str()), (302, "service_unavailable"));
    assert_eq!(aws.injected(), 6, "the SDK retried, then gave up, twice");
    assert!(stack.list("acme").await.is_empty(), "nothing half-written");
    let orphan = stack.finch.shared.world().connections.keys().next().cloned().unwrap();
    assert!(captured_logs().lines().any(|l| l.contains(&orphan) && l.contains("not stored")));
    aws.clear();

    let id = retry_connect(&stack, "acme").await;
    assert_eq!(id, orphan, "the retry recovered the same Finch connection");
    assert_eq!(stack.list("acme").await.len(), 1);
    assert_no_plaintext(&stack, &stack.raw_connection(&id).await.unwrap());
}

#[tokio::test]
async fn dynamodb_throttling_at_each_step_is_a_clear_503_and_retries_complete() {
    let stack = TestStack::start_with_aws_faults().await;
    let aws = stack.aws.clone().unwrap();
    let token = stack.token("acme");
    let body = json!({"products": ["company"]});

    // create-session: the state cannot be stored.
    aws.inject(AwsFault::outage("DynamoDB_20120810.PutItem", 400, "ThrottlingException"));
    let (s, c) = code_of(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
    assert_eq!((s, c.as_str()), (503, "service_unavailable"));
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);

    // The callback: the connection cannot be written (transaction throttled). The token is
    // already exchanged, so a short outage is ridden out inside the request...
    let cb = stack.callback_url_for("acme", body.clone()).await;
    aws.inject(AwsFault::outage("DynamoDB_20120810.TransactWriteItems", 400, "ProvisionedThroughputExceededException"));
    assert_eq!(stack.get(&cb, None).await.status(), 302);
    assert_eq!(stack.list("acme").await.len(), 1);
    // ... and a long one is a clear 503 that leaves nothing half-written; connecting again recovers.
    let cb = stack.callback_url_for("globex", body.clone()).await;
    let throttled =
        AwsFault { times: 9, ..AwsFault::outage("DynamoDB_20120810.TransactWriteItems", 400, "ThrottlingException") };
    aws.inject(throttled);
    let (s, c) = code_of(stack.get(&cb, None).await).await;
    assert_eq!((s, c.as_str()), (302, "service_unavailable"));
    assert!(stack.list("globex").await.is_empty());
    aws.clear();
    retry_connect(&stack, "globex").await;
    assert_eq!(stack.list("globex").await.len(), 1);
    let id = stack.list("acme").await[0]["connection_id"].as_str().unwrap().to_owned();

    // The listing, and a disconnect whose final write fails: it stays disconnecting, then finishes.
    aws.inject(AwsFault::outage("DynamoDB_20120810.Query", 400, "ThrottlingException"));
    let (s, _) = code_of(stack.get("/connections", Some(&token)).await).await;
    assert_eq!(s, 503);
    let delete = || stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send();
    aws.inject(AwsFault::outage("DynamoDB_20120810.UpdateItem", 500, "InternalServerError"));
    // The first UpdateItem (mark disconnecting) fails; nothing was sent to Finch.
    assert_eq!(delete().await.unwrap().status(), 503);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 0);
    assert_eq!(delete().await.unwrap().status(), 204);
    let item = stack.raw_connection(&id).await.unwrap();
    assert!(!item.contains_key("token_ciphertext"));
}

#[tokio::test]
async fn kms_down_during_a_disconnect_keeps_the_token_until_a_retry() {
    let stack = TestStack::start_with_aws_faults().await;
    let aws = stack.aws.clone().unwrap();
    let id = stack.connect("acme").await;
    let token = stack.token("acme");
    aws.inject(AwsFault::outage("TrentService.Decrypt", 400, "KeyUnavailableException"));
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let item = stack.raw_connection(&id).await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "disconnecting");
    assert!(item.contains_key("token_ciphertext"), "the token is not lost");
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 0);
    aws.clear(); // KMS is back.
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 1);
}

#[tokio::test]
async fn secrets_manager_down_at_cold_start_fails_clearly_and_recovers_without_a_restart() {
    let stack = TestStack::start_with_aws_faults().await;
    let aws = stack.aws.clone().unwrap();
    let token = stack.token("acme");
    let body = json!({"products": ["company"]});
    aws.inject(AwsFault::outage("secretsmanager.GetSecretValue", 500, "InternalServiceError"));
    let (s, c) = code_of(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
    assert_eq!((s, c.as_str()), (503, "service_unavailable"));
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 0);
    aws.clear();
    // The failure was not cached: the next request reads the secret and succeeds.
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);
    // Once cached, an outage does not matter until the TTL.
    aws.inject(AwsFault::outage("secretsmanager.GetSecretValue", 500, "InternalServiceError"));
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);
}

#[tokio::test]
async fn finch_failing_on_introspect_or_company_still_stores_the_connection() {
    let stack = TestStack::start().await;
    stack.inject(json!({"path": "/introspect", "status": 500, "times": 3}));
    stack.inject(json!({"path": "/employer/company", "status": 502, "times": 3}));
    let r = connect_attempt(&stack, "acme").await;
    assert_eq!(r.status(), 302, "the token is kept even when the details fail");
    let back = location(&r);
    assert_eq!(query(&back, "status").as_deref(), Some("pending"));
    let list = stack.list("acme").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["company_name"], "acme", "the customer name stands in for the company");
}

#[tokio::test]
async fn finch_failures_on_reauthentication_sessions_are_clear_and_retryable() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let path = format!("/connections/{id}/reauthenticate");
    stack.inject(json!({"path": "/connect/sessions/reauthenticate", "status": 500, "times": 3}));
    let (s, c) = code_of(stack.post_json(&path, Some(&stack.token("acme")), &json!({})).await).await;
    assert_eq!((s, c.as_str()), (502, "finch_unavailable"));
    stack.inject(json!({"path": "/connect/sessions/reauthenticate", "status": 429, "retry_after": 30, "times": 1}));
    let (s, c) = code_of(stack.post_json(&path, Some(&stack.token("acme")), &json!({})).await).await;
    assert_eq!(
        (s, c.as_str()),
        (503, "finch_rate_limited"),
        "a Retry-After beyond 10 s is not waited out in a request"
    );
    assert_eq!(stack.post_json(&path, Some(&stack.token("acme")), &json!({})).await.status(), 201);
}

#[tokio::test]
async fn a_callback_cut_off_mid_exchange_leaves_no_duplicate_and_the_next_connect_recovers() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    // The function is stopped (the client gives up; the handler future is dropped) while the
    // code exchange is in flight at Finch.
    stack.inject(json!({"path": "/auth/token", "latency_ms": 400, "times": 1}));
    let cut = stack.http.get(&cb).timeout(std::time::Duration::from_millis(150)).send().await;
    assert!(cut.is_err(), "the caller saw the cut, not an answer");
    // Wait (bounded) for Finch to finish the exchange it received.
    for _ in 0..200 {
        if stack.finch.requests().iter().any(|r| r.path == "/auth/token" && r.status == 200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(stack.list("acme").await.is_empty());
    // Replaying the same callback does not exchange again.
    let (s, reason) = code_of(stack.get(&cb, None).await).await;
    assert_eq!((s, reason.as_str()), (302, "state_invalid"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
    let id = retry_connect(&stack, "acme").await;
    assert_eq!(stack.list("acme").await.len(), 1);
    assert_eq!(stack.finch.shared.world().connections.len(), 1, "Finch holds one connection, not two");
    assert!(stack.finch.shared.world().connections.contains_key(&id));
}

/// Init opens the DynamoDB connection (`PREWARM_CONNECTIONS`, BENCHMARKS.md G9) but never
/// depends on it: with DynamoDB refusing, the function still starts, says why in its log, and
/// its first request connects as it would have.
#[tokio::test]
async fn a_connection_not_opened_in_init_is_logged_and_the_function_still_serves() {
    let stack = TestStack::start_with_aws_faults().await;
    let aws = stack.aws.clone().unwrap();
    let sdk = stack.sdk_as("list-connections").await;
    let me = perch_tests::access_key_id("list-connections");
    let describes = |aws: &perch_tests::aws_faults::AwsFaults| {
        aws.calls().iter().filter(|c| c.principal == me && c.target.ends_with(".DescribeTable")).count()
    };

    // However many attempts the SDK makes before init's 2 s bound, all fail.
    aws.inject(AwsFault {
        times: 100,
        ..AwsFault::outage("DynamoDB_20120810.DescribeTable", 500, "InternalServerError")
    });
    let app = perch::AppState::on_aws(stack.config.clone(), &sdk, &[]).unwrap();
    app.prewarm().await;
    assert!(aws.injected() >= 1, "init tried, failed, and went on");
    assert!(captured_logs().lines().any(|l| l.contains("not opened in init")), "the failure is logged");
    aws.clear();
    let id = stack.connect("acme").await;
    let listed = perch::flows::operators::list(&app, &perch::domain::CustomerId::parse("acme").unwrap()).await;
    assert!(listed.unwrap().iter().any(|c| c.connection_id.to_string() == id), "the first request connected");

    // Switched off, init makes no call at all.
    let mut config = stack.config.clone();
    config.prewarm_connections = false;
    let before = describes(&aws);
    perch::AppState::on_aws(config, &sdk, &[]).unwrap().prewarm().await;
    assert_eq!(describes(&aws), before);
    // On, one call.
    perch::AppState::on_aws(stack.config.clone(), &sdk, &[]).unwrap().prewarm().await;
    assert_eq!(describes(&aws), before + 1);
}
