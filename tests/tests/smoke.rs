//! The smoke test of a deployment (README "Operations"):
//!
//! ```sh
//! PERCH_API_URL=https://abc123.execute-api.us-east-1.amazonaws.com PERCH_JWT="$(your-idp-token)" \
//!   cargo test -p perch-tests --test smoke -- --ignored
//! ```
//!
//! It touches every layer a deployment can get wrong — the JWT authorizer, each function's
//! role, the table, the Finch secret (credentials and state key), Finch itself — and leaves
//! nothing behind but one unused Connect session at Finch, which expires on its own. The same
//! checks run against the local stack in every test run, so they are known to pass before they
//! meet a deployment.

use perch_tests::TestStack;
use serde_json::{Value, json};

/// Runs the checks against `base` with a JWT whose customer claim names a test customer.
async fn smoke(base: &str, jwt: &str) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let url = |p: &str| format!("{}{p}", base.trim_end_matches('/'));
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body)
    };

    // The authorizer refuses a request without a token.
    let r = http.get(url("/connections")).send().await.expect("the API answers");
    assert_eq!(r.status(), 401, "GET /connections without a JWT");

    // The listing: the authorizer, list-connections and its index query.
    let r = http.get(url("/connections")).bearer_auth(jwt).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET /connections with the JWT (is its customer claim set?)");
    let v: Value = r.json().await.unwrap();
    assert!(v["connections"].is_array(), "{v}");

    // A Connect session: the Finch credentials in the secret, Finch, the table.
    let r = http.post(url("/connect/sessions")).bearer_auth(jwt).json(&json!({"products": ["company"]})).send().await;
    let (status, v) = problem(r.unwrap()).await;
    assert_eq!(status, 201, "POST /connect/sessions (are client_id and client_secret set in the secret?): {v}");
    let connect_url = url::Url::parse(v["connect_url"].as_str().unwrap()).expect("a Connect URL");
    assert!(connect_url.query_pairs().any(|(k, _)| k == "state"), "the redirect flow carries a signed state");

    // The callback verifies the state with the secret's state key before anything else, and
    // sends the browser back to the app saying so.
    let r = http.get(url("/connect/callback?code=smoke&state=forged")).send().await.unwrap();
    assert_eq!(r.status(), 302, "GET /connect/callback goes back to APP_RETURN_URL");
    let back = r.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
    assert!(back.contains("outcome=error") && back.contains("reason=state_invalid"), "{back}");

    // The webhook refuses an unsigned delivery.
    let r = http.post(url("/finch/webhooks")).json(&json!({"event_type": "account.updated"})).send().await.unwrap();
    let (status, v) = problem(r).await;
    assert!(status == 400 || status == 401, "an unsigned webhook: {status} {v}");

    // An id nobody owns is a 404, for reauthentication and disconnection alike.
    for r in [
        http.post(url("/connections/smoke-no-such-id/reauthenticate")).bearer_auth(jwt).json(&json!({})).send(),
        http.delete(url("/connections/smoke-no-such-id")).bearer_auth(jwt).send(),
    ] {
        let (status, v) = problem(r.await.unwrap()).await;
        assert_eq!(status, 404, "{v}");
    }
}

#[tokio::test]
#[ignore = "needs a deployed Perch: set PERCH_API_URL and PERCH_JWT (README \"Operations\")"]
async fn a_deployed_perch_answers_on_every_layer() {
    let base = std::env::var("PERCH_API_URL").expect("PERCH_API_URL: the stack's ApiUrl output");
    let jwt = std::env::var("PERCH_JWT").expect("PERCH_JWT: a token from the frontend's identity provider");
    smoke(&base, &jwt).await;
}

#[tokio::test]
async fn the_smoke_checks_pass_against_the_local_stack() {
    let stack = TestStack::start().await;
    smoke(&stack.base, &stack.token("smoke-test")).await;
}
