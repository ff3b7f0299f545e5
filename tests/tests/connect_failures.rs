//! Connect's failure paths, tried as an employer, an attacker and a load would (issue 14), on
//! the local stack: moto + the Finch emulator + Perch's functions over HTTP. Races are made
//! exact with the emulator's holds (a Finch call waits at a gate the test opens), not sleeps.

use std::collections::HashMap;

use perch_tests::{APP_RETURN_URL, TestStack, location, query};
use serde_json::{Value, json};

/// Where a callback sent the browser: the app, with these query parameters. Nothing secret
/// may ride along.
fn back_in_app(r: &reqwest::Response, stack: &TestStack) -> HashMap<String, String> {
    assert_eq!(r.status(), 302, "every callback outcome goes back to the app");
    let to = location(r);
    assert!(to.starts_with(APP_RETURN_URL), "{to}");
    for secret in stack.issued_codes().iter().chain(stack.issued_tokens().iter()) {
        assert!(!to.contains(secret.as_str()), "a code or token in the app URL");
    }
    let q: HashMap<String, String> = url::Url::parse(&to).unwrap().query_pairs().into_owned().collect();
    assert!(!q.contains_key("code") && !q.contains_key("state"), "{to}");
    q
}

/// A failure back in the app: `(reason, next)`, after checking the request id rides along.
fn failure(r: &reqwest::Response, stack: &TestStack) -> (String, String) {
    let q = back_in_app(r, stack);
    assert_eq!(q.get("outcome").map(String::as_str), Some("error"), "{q:?}");
    assert!(q.get("request_id").is_some_and(|id| !id.is_empty()), "{q:?}");
    (q["reason"].clone(), q["next"].clone())
}

fn pair(reason: &str, next: &str) -> (String, String) {
    (reason.to_owned(), next.to_owned())
}

/// A callback URL with `key` set to `value` (or removed with `None`).
fn with_param(cb: &str, key: &str, value: Option<&str>) -> String {
    let mut u = url::Url::parse(cb).unwrap();
    let kept: Vec<(String, String)> = u.query_pairs().into_owned().filter(|(k, _)| k != key).collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(key, v);
        }
    }
    u.to_string()
}

/// The code the emulator's Connect page hands an embedded flow.
async fn embedded_code(stack: &TestStack, connect_url: &str) -> String {
    let html = stack.login_at_finch(connect_url).await.text().await.unwrap();
    html.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).expect("code on the page").to_owned()
}

// --- the redirect flow's unhappy paths -----------------------------------------------------

#[tokio::test]
async fn a_declined_consent_lands_back_in_the_app_saying_so() {
    let stack = TestStack::start().await;
    let s = stack.new_session("acme", json!({"products": ["company"]})).await;
    let declined =
        stack.http.post(s["connect_url"].as_str().unwrap()).form(&[("action", "deny")]).send().await.unwrap();
    assert_eq!(declined.status(), 302, "Finch Connect redirects back with an OAuth error");
    let cb = location(&declined);
    assert_eq!(query(&cb, "error").as_deref(), Some("access_denied"));
    assert!(query(&cb, "code").is_none());
    let r = stack.get(&cb, None).await;
    assert_eq!(failure(&r, &stack), pair("consent_denied", "restart"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 0);
}

#[tokio::test]
async fn missing_forged_reused_and_expired_states_land_back_in_the_app() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let no_state = stack.get(&with_param(&cb, "state", None), None).await;
    assert_eq!(failure(&no_state, &stack), pair("state_invalid", "restart"));
    let forged = stack.get(&with_param(&cb, "state", Some("forged.state")), None).await;
    assert_eq!(failure(&forged, &stack), pair("state_invalid", "restart"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 0, "none of them reached Finch");

    let first = stack.get(&cb, None).await;
    assert_eq!(back_in_app(&first, &stack)["outcome"], "created");
    let reused = stack.get(&cb, None).await;
    assert_eq!(failure(&reused, &stack), pair("state_invalid", "restart"));

    let cb = stack.callback_url_for("globex", json!({"products": ["company"], "minutes_to_expire": 60})).await;
    stack.app.clock.advance(time::Duration::minutes(61));
    let expired = stack.get(&cb, None).await;
    assert_eq!(failure(&expired, &stack), pair("state_invalid", "restart"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
}

#[tokio::test]
async fn unknown_codes_and_finch_failures_at_the_exchange_land_back_in_the_app() {
    let stack = TestStack::start_with(|env| {
        env.insert("FINCH_TIMEOUT_MS", "400".into());
        env.insert("FINCH_MAX_RETRIES", "0".into());
    })
    .await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let unknown = stack.get(&with_param(&cb, "code", Some("not-a-code-finch-issued")), None).await;
    assert_eq!(failure(&unknown, &stack), pair("code_invalid", "restart"));

    for (fault, expected) in [
        (json!({"path": "/auth/token", "status": 500, "times": 1}), pair("finch_unavailable", "retry")),
        (
            json!({"path": "/auth/token", "status": 429, "retry_after": 1, "times": 1}),
            pair("finch_rate_limited", "retry"),
        ),
        (json!({"path": "/auth/token", "latency_ms": 1500, "times": 1}), pair("finch_timeout", "retry")),
    ] {
        let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
        stack.inject(fault.clone());
        let r = stack.get(&cb, None).await;
        assert_eq!(failure(&r, &stack), expected, "{fault}");
    }
}

#[tokio::test]
async fn odd_and_oversized_callbacks_land_back_in_the_app_and_write_nothing() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let both = with_param(&cb, "error", Some("access_denied"));
    assert_eq!(failure(&stack.get(&both, None).await, &stack), pair("consent_denied", "restart"));
    let odd = format!("{}/connect/callback?error=%3Cscript%3E&error_description=a%0D%0Ab&foo=bar", stack.base);
    assert_eq!(failure(&stack.get(&odd, None).await, &stack), pair("connect_failed", "restart"));
    let twice = format!("{cb}&state=again");
    assert_eq!(failure(&stack.get(&twice, None).await, &stack), pair("invalid_query", "restart"));
    let huge = with_param(&cb, "state", Some(&"s".repeat(20_000)));
    assert_eq!(failure(&stack.get(&huge, None).await, &stack), pair("state_invalid", "restart"));
    let long_code = with_param(&cb, "code", Some(&"c".repeat(5_000)));
    assert_eq!(failure(&stack.get(&long_code, None).await, &stack), pair("code_invalid", "restart"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 0);
    assert!(stack.list("acme").await.is_empty());
    // The state survived all of it: the real callback still completes.
    assert_eq!(back_in_app(&stack.get(&cb, None).await, &stack)["outcome"], "created");
}

#[tokio::test]
async fn a_connect_link_works_as_long_as_its_finch_session() {
    let stack = TestStack::start().await;
    // A week-long link, used on day 6 (a state used to die after one day).
    let cb = stack.callback_url_for("acme", json!({"products": ["company"], "minutes_to_expire": 10_080})).await;
    stack.app.clock.advance(time::Duration::days(6));
    assert_eq!(back_in_app(&stack.get(&cb, None).await, &stack)["outcome"], "created");
    // Without `minutes_to_expire`, Finch's default: 30 days.
    let cb = stack.callback_url_for("globex", json!({"products": ["company"]})).await;
    stack.app.clock.advance(time::Duration::days(29));
    assert_eq!(back_in_app(&stack.get(&cb, None).await, &stack)["outcome"], "created");
    let cb = stack.callback_url_for("initech", json!({"products": ["company"]})).await;
    stack.app.clock.advance(time::Duration::days(30) + time::Duration::minutes(1));
    assert_eq!(failure(&stack.get(&cb, None).await, &stack), pair("state_invalid", "restart"));
}

#[tokio::test]
async fn finch_refusing_perchs_own_setup_is_a_configuration_error_with_an_alarmed_log_line() {
    let stack = TestStack::start().await;
    // The redirect URI Finch holds for the session is not the one Perch sends (a deployment
    // whose FINCH_REDIRECT_URI changed under a live link).
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let code = query(&cb, "code").unwrap();
    stack.finch.shared.world().codes.get_mut(&code).unwrap().redirect_uri = Some("https://elsewhere.test/cb".into());
    let r = stack.get(&cb, None).await;
    assert_eq!(failure(&r, &stack), pair("configuration_error", "contact_support"));
    let finch_request_id = stack.finch.requests().iter().rfind(|s| s.path == "/auth/token").unwrap().request_id.clone();
    let logs = perch_tests::captured_logs();
    let alarmed = logs
        .lines()
        .filter(|l| l.contains(&finch_request_id))
        .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("\"alarm\":\"configuration_error\""));
    assert!(alarmed, "an ERROR line for the alarm names Finch's request id");

    // The embedded flow: Finch refuses the client credentials. A 500, not "start again".
    let s = stack.new_session("globex", json!({"products": ["company"], "flow": "embedded"})).await;
    let code = embedded_code(&stack, s["connect_url"].as_str().unwrap()).await;
    stack.inject(json!({"path": "/auth/token", "status": 401, "times": 1}));
    let body = json!({"code": code, "state": s["state"]});
    let r = stack.post_json("/connect/callback", Some(&stack.token("globex")), &body).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "configuration_error");
}

#[tokio::test]
async fn a_token_response_without_a_connection_id_is_completed_from_introspect() {
    let stack = TestStack::start().await;
    stack.finch.shared.world().token_without_connection_id = true;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let q = back_in_app(&stack.get(&cb, None).await, &stack);
    assert_eq!(q["outcome"], "created");
    let listed = stack.list("acme").await;
    assert_eq!(listed[0]["connection_id"].as_str(), Some(q["connection_id"].as_str()));
    assert_eq!(listed[0]["status"], "connected");
}

// --- tried as an attacker would --------------------------------------------------------------

#[tokio::test]
async fn a_code_sent_with_someone_elses_state_is_kept_for_its_owner_not_orphaned() {
    let stack = TestStack::start().await;
    // acme's employer finished Connect; the attacker (globex) pieces acme's code together
    // with a valid state of its own.
    let victim = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let attacker = stack.callback_url_for("globex", json!({"products": ["company"]})).await;
    let forged = with_param(&attacker, "code", Some(&query(&victim, "code").unwrap()));
    assert_eq!(failure(&stack.get(&forged, None).await, &stack), pair("code_invalid", "restart"));
    assert!(stack.list("globex").await.is_empty());
    // The connection Finch made is acme's: held for acme, not revoked, not left billed.
    let held = stack.list("acme").await;
    assert_eq!(held.len(), 1);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 0);
    // acme's own callback then finds it, with no second exchange and no 409.
    let q = back_in_app(&stack.get(&victim, None).await, &stack);
    assert_eq!(
        (q["outcome"].as_str(), q["connection_id"].as_str()),
        ("already_connected", held[0]["connection_id"].as_str().unwrap())
    );
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
}

#[tokio::test]
async fn the_embedded_flow_requires_a_state_and_a_refused_code_is_not_left_marked() {
    let stack = TestStack::start().await;
    let token = stack.token("globex");
    let r = stack.post_json("/connect/callback", Some(&token), &json!({"code": "guessed-code-123"})).await;
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["code"].clone()), (400, json!("state_invalid")));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 0, "no client credentials spent on a guess");

    // Finch refuses a code for good: the caller hears code_invalid, now and on a retry.
    for _ in 0..2 {
        let s = stack.new_session("globex", json!({"products": ["company"], "flow": "embedded"})).await;
        let body = json!({"code": "not-a-code-finch-issued", "state": s["state"]});
        let r = stack.post_json("/connect/callback", Some(&token), &body).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "code_invalid", "not a 409 for an hour");
    }
}

#[tokio::test]
async fn an_embedded_state_cannot_be_burnt_through_the_browser_callback() {
    let stack = TestStack::start().await;
    let s = stack.new_session("acme", json!({"products": ["company"], "flow": "embedded"})).await;
    let state = s["state"].as_str().unwrap();
    let code = embedded_code(&stack, s["connect_url"].as_str().unwrap()).await;
    let burn = format!("{}/connect/callback?code=x&state={}", stack.base, urlencoding(state));
    assert_eq!(failure(&stack.get(&burn, None).await, &stack), pair("state_invalid", "restart"));
    let r =
        stack.post_json("/connect/callback", Some(&stack.token("acme")), &json!({"code": code, "state": state})).await;
    assert_eq!(r.status(), 201, "the state is still good for its own flow");
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_token_that_cannot_be_decrypted_still_disconnects_and_says_why() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let other = stack.connect("globex").await;
    // Moved: another connection's ciphertext (KMS refuses it under this one's context).
    let foreign = stack.raw_connection(&other).await.unwrap()["token_ciphertext"].clone();
    stack
        .ddb
        .update_item()
        .table_name(&stack.config.table_name)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("CONN#{id}")))
        .update_expression("SET token_ciphertext = :ct")
        .expression_attribute_values(":ct", foreign)
        .send()
        .await
        .unwrap();
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(stack.token("acme")).send();
    assert_eq!(r.await.unwrap().status(), 204, "not left disconnecting with every retry a 500");
    let item = stack.raw_connection(&id).await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "disconnected");
    assert!(!item.contains_key("token_ciphertext"));
    assert!(item["disconnect_note"].as_s().unwrap().starts_with("token_unreadable"));
    assert!(stack.list("acme").await.is_empty());
    let logs = perch_tests::captured_logs();
    assert!(
        logs.lines().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains(&id) && l.contains("cannot be decrypted"))
    );
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id_and_connection() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    stack.inject(json!({"path": "/disconnect", "status": 500, "times": 3}));
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(stack.token("acme")).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 502);
    let request_id = r.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned();
    let logs = perch_tests::captured_logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&request_id)).collect();
    assert!(lines.len() >= 2, "{lines:#?}");
    let failed = lines.iter().find(|l| l.contains("request failed")).expect("the failure's line has the request id");
    assert!(failed.contains(&id), "and names the connection: {failed}");
}

#[tokio::test]
async fn small_holes_are_closed() {
    let stack = TestStack::start().await;
    let token = stack.token("acme");
    // `application/jsonx` is not JSON.
    let r = stack
        .http
        .post(format!("{}/connect/sessions", stack.base))
        .bearer_auth(&token)
        .header("content-type", "application/jsonx")
        .body(r#"{"products":["company"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unsupported_media_type");
    // A name an employer would be shown reversed, or cut by a line break.
    for name in ["\u{202e}emca", "Acme\r\nEvil", "Acme\u{0}"] {
        let body = json!({"products": ["company"], "customer_name": name});
        let r = stack.post_json("/connect/sessions", Some(&token), &body).await;
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_customer_name", "{name:?}");
    }
    // Session ids are links that stay usable at Finch: not in the logs.
    let s = stack.new_session("acme", json!({"products": ["company"]})).await;
    assert!(!perch_tests::captured_logs().contains(s["session_id"].as_str().unwrap()));
    // The local token issuer refuses what it cannot issue instead of panicking.
    let r = stack.post_json("/dev/token", None, &json!({"customer_id": "acme", "ttl_seconds": i64::MAX})).await;
    assert_eq!(r.status(), 400);
}

// --- races found under load ------------------------------------------------------------------

#[tokio::test]
async fn a_status_pushed_during_a_reauthentication_callback_is_not_overwritten() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    stack.flip(&id, "reauth").await;
    let s = stack.post_json(&format!("/connections/{id}/reauthenticate"), Some(&stack.token("acme")), &json!({})).await;
    let s: Value = s.json().await.unwrap();
    let cb = location(&stack.login_at_finch(s["connect_url"].as_str().unwrap()).await);
    // The callback has introspected (Finch: connected) and is reading the company when
    // Finch reports the employer must log in again.
    stack.inject(json!({"path": "/employer/company", "hold": "company", "times": 1}));
    let meanwhile = async {
        stack.finch.shared.holds().arrived("company").await;
        stack.flip(&id, "reauth").await;
        stack.finch.shared.holds().release("company");
    };
    let (r, ()) = tokio::join!(stack.get(&cb, None), meanwhile);
    assert_eq!(back_in_app(&r, &stack)["outcome"], "reauthenticated");
    assert_eq!(stack.finch.shared.world().connections[&id].status, "reauth");
    assert_eq!(stack.stored_status(&id).await, "reauth", "the newer observation stands");
}

#[tokio::test]
async fn a_status_pushed_during_a_first_connect_is_applied_once_the_connection_is_stored() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let id = stack.finch.shared.world().codes[&query(&cb, "code").unwrap()].connection_id.clone();
    stack.inject(json!({"path": "/employer/company", "hold": "company", "times": 1}));
    let meanwhile = async {
        stack.finch.shared.holds().arrived("company").await;
        let answer = stack.flip(&id, "reauth").await;
        stack.finch.shared.holds().release("company");
        answer
    };
    let (r, _) = tokio::join!(stack.get(&cb, None), meanwhile);
    let q = back_in_app(&r, &stack);
    assert_eq!((q["outcome"].as_str(), q["status"].as_str()), ("created", "reauth"));
    assert_eq!(stack.stored_status(&id).await, "reauth", "the webhook was not lost");
}

#[tokio::test]
async fn reauthentication_is_refused_once_a_disconnect_has_started() {
    let stack = TestStack::start().await;
    let token = stack.token("acme");
    // A disconnect that Finch failed: the connection stays disconnecting until a retry.
    let id = stack.connect("acme").await;
    stack.inject(json!({"path": "/disconnect", "status": 500, "times": 3}));
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let r = stack.post_json(&format!("/connections/{id}/reauthenticate"), Some(&token), &json!({})).await;
    assert_eq!(
        (r.status().as_u16(), r.json::<Value>().await.unwrap()["code"].clone()),
        (409, json!("connection_disconnecting"))
    );
    // Nor through a new session that Finch answers with connection_already_exists.
    let r = stack.post_json("/connect/sessions", Some(&token), &json!({"products": ["company"]})).await;
    assert_eq!(
        (r.status().as_u16(), r.json::<Value>().await.unwrap()["code"].clone()),
        (409, json!("connection_disconnecting"))
    );
    assert_eq!(stack.finch_calls("POST", "/connect/sessions/reauthenticate"), 0);

    // A disconnect that starts while Finch is creating the reauthentication session (and that
    // Finch has not confirmed yet when the session comes back).
    let id = stack.connect("globex").await;
    let token = stack.token("globex");
    stack.inject(json!({"path": "/connect/sessions/reauthenticate", "hold": "reauth", "times": 1}));
    stack.inject(json!({"path": "/disconnect", "status": 500, "times": 3}));
    let (path, empty) = (format!("/connections/{id}/reauthenticate"), json!({}));
    let reauth = stack.post_json(&path, Some(&token), &empty);
    let meanwhile = async {
        stack.finch.shared.holds().arrived("reauth").await;
        let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send().await;
        stack.finch.shared.holds().release("reauth");
        r.unwrap().status()
    };
    let (r, deleted) = tokio::join!(reauth, meanwhile);
    assert_eq!(deleted, 502);
    assert_eq!(stack.stored_status(&id).await, "disconnecting");
    assert_eq!(
        (r.status().as_u16(), r.json::<Value>().await.unwrap()["code"].clone()),
        (409, json!("connection_disconnecting"))
    );
}
