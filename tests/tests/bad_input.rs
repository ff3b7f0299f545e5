//! Bad input, hostile callers and failing dependencies: each gets a clear problem response,
//! nothing is half-written, no secret is echoed or logged.

use perch::store::IssueState;
use perch_tests::{TestStack, captured_logs, location, query};
use serde_json::{Value, json};

/// A problem response as `(status, body)`; a failed browser callback, which goes back to the
/// app instead, as `(302, {"code": reason, "next": …})` from its redirect.
async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    if status == 302 {
        let to = location(&r);
        assert!(to.starts_with(perch_tests::APP_RETURN_URL), "{to}");
        assert_eq!(query(&to, "outcome").as_deref(), Some("error"), "{to}");
        return (302, json!({"code": query(&to, "reason"), "next": query(&to, "next")}));
    }
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    if status >= 400 && !body.get("message").is_some_and(|m| m == "Unauthorized") {
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["status"], status);
        assert!(body["title"].is_string() && body["detail"].is_string());
        assert_eq!(body["type"], format!("urn:perch:problem:{}", body["code"].as_str().unwrap()));
    }
    (status, body)
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> =
        u.query_pairs().filter(|(k, _)| k != key).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    u.query_pairs_mut().clear().extend_pairs(pairs).append_pair(key, value);
    u.to_string()
}

#[tokio::test]
async fn the_customer_comes_only_from_a_valid_jwt() {
    let stack = TestStack::start().await;
    let body = json!({"products": ["company"]});
    let r = stack.post_json("/connect/sessions", None, &body).await;
    assert_eq!(r.status(), 401);
    let r = stack.post_json("/connect/sessions", Some("not.a.jwt"), &body).await;
    assert_eq!(r.status(), 401);

    for claims in [
        json!({"sub": "u1"}),
        json!({"customer_id": ""}),
        json!({"customer_id": "x".repeat(300)}),
        json!({"customer_id": "a b"}),
    ] {
        let t = stack.auth.issue_claims(claims.as_object().unwrap()).unwrap();
        let (status, p) = problem(stack.post_json("/connect/sessions", Some(&t), &body).await).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (401, "unauthenticated"), "{claims}");
        let (status, _) = problem(stack.get("/connections", Some(&t)).await).await;
        assert_eq!(status, 401);
    }
    let r = stack
        .post_json(
            "/connect/sessions",
            Some(&stack.token("acme")),
            &json!({"products": ["company"], "customer_id": "globex"}),
        )
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(
        (status, p["code"].as_str().unwrap()),
        (400, "invalid_body"),
        "a customer in the body is refused, not obeyed"
    );
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 0);
}

#[tokio::test]
async fn malformed_session_requests_are_refused_before_finch() {
    let stack = TestStack::start().await;
    let token = stack.token("acme");
    let cases = [
        (json!({}), "invalid_body"),
        (json!({"products": []}), "invalid_products"),
        (json!({"products": ["payroll"]}), "invalid_body"),
        (json!({"products": ["company"], "sandbox": true}), "invalid_body"),
        (json!({"products": ["company"], "minutes_to_expire": 0}), "invalid_minutes_to_expire"),
        (
            json!({"products": ["company"], "integration": {"provider": "gusto", "auth_method": "magic"}}),
            "invalid_body",
        ),
        (json!({"products": ["company"], "flow": "popup"}), "invalid_body"),
        (json!({"products": ["company"], "customer_email": "nope"}), "invalid_customer_email"),
    ];
    for (body, code) in cases {
        let (status, p) = problem(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (400, code), "{body}");
    }
    let raw = |body: &'static str, ct: &'static str| {
        stack
            .http
            .post(format!("{}/connect/sessions", stack.base))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let (status, p) = problem(raw("{\"products\": [", "application/json").await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (400, "invalid_body"));
    let (status, p) = problem(raw("products=company", "application/x-www-form-urlencoded").await.unwrap()).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (400, "unsupported_media_type"));
    let big = format!("{{\"products\":[\"company\"],\"customer_name\":\"{}\"}}", "x".repeat(20_000));
    let r = stack
        .http
        .post(format!("{}/connect/sessions", stack.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, p) = problem(r).await;
    assert_eq!((status, p["code"].as_str().unwrap()), (413, "payload_too_large"));
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 0, "nothing invalid reaches Finch");
}

#[tokio::test]
async fn missing_forged_expired_and_reused_states_never_reach_finch() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let code = query(&cb, "code").unwrap();
    let base = format!("{}/connect/callback", stack.base);

    let (s, p) = problem(stack.get(&base, None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "code_invalid"));
    let (s, p) = problem(stack.get(&format!("{base}?code={code}"), None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "state_invalid"));
    for forged in ["x", "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", &format!("{}x", query(&cb, "state").unwrap())]
    {
        let (s, p) = problem(stack.get(&with_query(&cb, "state", forged), None).await).await;
        assert_eq!((s, p["code"].as_str().unwrap()), (302, "state_invalid"), "{forged}");
    }
    let (s, p) = problem(stack.get(&format!("{cb}&state=dup"), None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "invalid_query"));

    // A correctly signed state whose stored flow has expired (TTL deletion is lazy).
    let secrets = stack.app.secrets.get().await.unwrap();
    use secrecy::ExposeSecret;
    let (value, id) = perch::crypto::state::issue(secrets.state_key.expose_secret()).unwrap();
    let flow = perch::store::PendingFlow {
        customer: perch::domain::CustomerId::parse("acme").unwrap(),
        finch_customer_id: perch::domain::FinchCustomerId::parse("acme").unwrap(),
        session_id: perch::domain::SessionId::parse("s").unwrap(),
        mode: perch::domain::FlowMode::Redirect,
        reauth_of: None,
        expires_at: time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
    };
    stack.app.store.put_state(id.id(), &flow).await.unwrap();
    let (s, p) = problem(stack.get(&with_query(&cb, "state", &value), None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "state_invalid"));

    assert_eq!(stack.finch_calls("POST", "/auth/token"), 0, "no state, no exchange");
    // The genuine state still works once.
    assert_eq!(stack.get(&cb, None).await.status(), 302);
    let (_, p) = problem(stack.get(&cb, None).await).await;
    assert_eq!(p["code"], "state_invalid", "and only once");
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
}

#[tokio::test]
async fn unknown_and_expired_codes_send_the_employer_back_to_start_again() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let (s, p) = problem(stack.get(&with_query(&cb, "code", "no-such-code"), None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "code_invalid"));

    let cb = stack.callback_url_for("globex", json!({"products": ["company"]})).await;
    stack.finch.shared.world().clock_offset_secs += 601;
    let (s, p) = problem(stack.get(&cb, None).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (302, "code_invalid"));
    assert!(stack.list("acme").await.is_empty() && stack.list("globex").await.is_empty());
}

#[tokio::test]
async fn another_customer_cannot_use_a_state_or_code_or_see_connections() {
    let stack = TestStack::start().await;
    let a = stack.new_session("acme", json!({"flow": "embedded", "products": ["company"]})).await;
    let page = stack.login_at_finch(a["connect_url"].as_str().unwrap()).await.text().await.unwrap();
    let code = page.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let state = a["state"].as_str().unwrap();
    let mallory = stack.token("globex");

    // B presents A's state: refused, and A's state is left intact.
    let (s, p) =
        problem(stack.post_json("/connect/callback", Some(&mallory), &json!({"code": code, "state": state})).await)
            .await;
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "state_invalid"));
    // B presents A's code without a state: refused before anything reaches Finch.
    let (s, p) = problem(stack.post_json("/connect/callback", Some(&mallory), &json!({"code": code})).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "state_invalid"));
    // B presents A's code with a state of B's own: exchanged, Finch filed it under A's
    // customer id, so B is refused and the connection is A's.
    let b = stack.new_session("globex", json!({"flow": "embedded", "products": ["company"]})).await;
    let body = json!({"code": code, "state": b["state"]});
    let (s, p) = problem(stack.post_json("/connect/callback", Some(&mallory), &body).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "code_invalid"));
    assert!(stack.list("globex").await.is_empty(), "nothing stored for the wrong customer");

    // A finishes its own flow: the connection is already there, for A.
    let body = json!({"code": code, "state": state});
    let r = stack.post_json("/connect/callback", Some(&stack.token("acme")), &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["outcome"], "already_connected");
    assert_eq!(stack.list("acme").await.len(), 1);
    assert!(stack.list("globex").await.is_empty());
}

#[tokio::test]
async fn finch_failures_map_to_clear_errors_and_follow_the_retry_rules() {
    let stack = TestStack::start_with(|env| {
        env.insert("FINCH_TIMEOUT_MS", "400".into());
    })
    .await;
    let token = stack.token("acme");
    let body = json!({"products": ["company"]});

    // 500 on sessions: retried twice (Finch's SDK policy), then a 502.
    stack.inject(json!({"path": "/connect/sessions", "status": 500, "times": 3}));
    let (s, p) = problem(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (502, "finch_unavailable"));
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 3);

    // A 429 that clears after one attempt is absorbed by a retry honouring Retry-After.
    stack.inject(json!({"path": "/connect/sessions", "status": 429, "retry_after": 0, "times": 1}));
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);

    // A timeout on sessions is retried, then a 504.
    stack.inject(json!({"path": "/connect/sessions", "latency_ms": 1000, "times": 3}));
    let (s, p) = problem(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (504, "finch_timeout"));

    // The code exchange is never retried once it may have reached Finch: 429 and timeout.
    let cb = stack.callback_url_for("acme", body.clone()).await;
    let before = stack.finch_calls("POST", "/auth/token");
    stack.inject(json!({"path": "/auth/token", "status": 429, "times": 5}));
    let (s, p) = problem(stack.get(&cb, None).await).await;
    assert_eq!((s, &p["code"], &p["next"]), (302, &json!("finch_rate_limited"), &json!("retry")));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), before + 1);

    let cb = stack.callback_url_for("acme", json!({"products": ["company"], "additional": true})).await;
    stack.finch.shared.world().faults.clear();
    stack.inject(json!({"path": "/auth/token", "latency_ms": 1000, "times": 5}));
    let (s, p) = problem(stack.get(&cb, None).await).await;
    assert_eq!((s, &p["code"], &p["next"]), (302, &json!("finch_timeout"), &json!("retry")));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), before + 2);
    assert!(stack.list("acme").await.is_empty(), "nothing half-written");
}

#[tokio::test]
async fn a_kms_failure_after_the_exchange_stores_nothing_and_logs_the_connection() {
    let stack = TestStack::start_with(|env| {
        env.insert("KMS_KEY_ID", "alias/perch-does-not-exist".into());
    })
    .await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let r = stack.get(&cb, None).await;
    let to = location(&r);
    let (s, p) = problem(r).await;
    assert_eq!((s, &p["code"], &p["next"]), (302, &json!("internal"), &json!("retry")), "{p}");
    assert!(!to.contains("does-not-exist"), "internal details stay in the log: {to}");
    assert!(stack.list("acme").await.is_empty());
    let orphan = stack.finch.shared.world().connections.keys().next().cloned().unwrap();
    assert!(stack.raw_connection(&orphan).await.is_none());
    let logs = captured_logs();
    assert!(
        logs.lines().any(|l| l.contains(&orphan) && l.contains("not stored")),
        "the orphaned connection id is logged for recovery"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_logs_or_a_response() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let e = stack.new_session("acme", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    let html = stack.login_at_finch(e["connect_url"].as_str().unwrap()).await.text().await.unwrap();
    let code = html.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let r = stack
        .post_json("/connect/callback", Some(&stack.token("acme")), &json!({"code": code, "state": e["state"]}))
        .await;
    let body = r.text().await.unwrap();
    // Failure paths too: a replay, a bad code.
    let other = stack.new_session("globex", json!({"flow": "embedded", "products": ["company"]})).await;
    let replay = stack
        .post_json("/connect/callback", Some(&stack.token("globex")), &json!({"code": code, "state": other["state"]}))
        .await
        .text()
        .await
        .unwrap();
    let forged = stack.get(&format!("/connect/callback?code={code}&state=forged"), None).await;
    assert_eq!(forged.status(), 302);
    let back = location(&forged);
    assert!(!back.contains(&code), "the code is not carried back to the app");

    let mut secrets = stack.issued_tokens();
    secrets.extend(stack.issued_codes());
    secrets.extend(stack.secret_values().await);
    assert!(secrets.len() >= 5);
    let logs = captured_logs();
    assert!(logs.contains(&id), "logs are being captured");
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs");
        assert!(!body.contains(s.as_str()) && !replay.contains(s.as_str()), "a secret reached a response");
    }
}

#[tokio::test]
async fn the_emulator_refuses_requests_outside_finchs_spec() {
    let stack = TestStack::start().await;
    let r = stack.http.get(format!("{}/introspect", stack.finch.base_url)).bearer_auth("t").send().await.unwrap();
    assert_eq!(r.status(), 400, "no Finch-API-Version header");
    assert!(r.headers().contains_key("finch-request-id"));
    let r = stack
        .http
        .post(format!("{}/auth/token", stack.finch.base_url))
        .header("finch-api-version", "2020-09-17")
        .json(&json!({"code": "c", "client_id": "not-a-uuid", "client_secret": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(stack.finch.violations().len(), 2);

    // ... while everything Perch sends in a full flow conforms.
    let fresh = TestStack::start().await;
    fresh.connect("acme").await;
    fresh.new_session("acme", json!({"products": ["company"], "sandbox": "finch", "manual": false, "minutes_to_expire": 60,
        "integration": {"provider": "gusto", "auth_method": "credential"}, "customer_email": "ops@acme.test", "additional": true})).await;
    assert!(fresh.finch.violations().is_empty(), "{:?}", fresh.finch.violations());
    assert!(fresh.finch_calls("POST", "/connect/sessions") >= 2);
}

#[tokio::test]
async fn a_rotated_client_secret_is_picked_up_without_a_restart() {
    let stack = TestStack::start().await;
    let token = stack.token("acme");
    let body = json!({"products": ["company"]});
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);

    // Finch's secret was rotated; Perch's cached copy is now wrong: Finch says invalid_client.
    let secret_id = &stack.config.finch_secret_id;
    let current: Value = serde_json::from_str(
        stack.sm.get_secret_value().secret_id(secret_id).send().await.unwrap().secret_string().unwrap(),
    )
    .unwrap();
    stack
        .finch
        .shared
        .world()
        .faults
        .push(serde_json::from_value(json!({"path": "/connect/sessions", "status": 401, "times": 1})).unwrap());
    let (s, p) = problem(stack.post_json("/connect/sessions", Some(&token), &body).await).await;
    assert_eq!((s, p["code"].as_str().unwrap()), (502, "finch_rejected"));
    let fetched_before = captured_logs().matches("Finch secret loaded").count();

    // The next request re-reads the secret (the 401 dropped the cache) and succeeds.
    stack.sm.put_secret_value().secret_id(secret_id).secret_string(current.to_string()).send().await.unwrap();
    assert_eq!(stack.post_json("/connect/sessions", Some(&token), &body).await.status(), 201);
    assert!(captured_logs().matches("Finch secret loaded").count() > fetched_before, "the secret was fetched again");
}

#[tokio::test]
async fn a_missing_table_is_a_500_without_details() {
    let stack = TestStack::start_with(|env| {
        env.insert("TABLE_NAME", "perch-no-such-table".into());
    })
    .await;
    let (s, p) = problem(
        stack.post_json("/connect/sessions", Some(&stack.token("acme")), &json!({"products": ["company"]})).await,
    )
    .await;
    assert_eq!((s, p["code"].as_str().unwrap()), (500, "internal"));
    assert!(!p.to_string().contains("no-such-table"));
    assert_eq!(
        stack.finch_calls("POST", "/connect/sessions"),
        0,
        "nothing sent to Finch without a claimed customer id"
    );
}

#[tokio::test]
async fn every_finch_response_is_logged_with_its_request_id() {
    let stack = TestStack::start().await;
    stack.connect("acme").await;
    stack.inject(json!({"path": "/connect/sessions", "status": 400, "times": 1}));
    let refused = stack
        .post_json(
            "/connect/sessions",
            Some(&stack.token("acme")),
            &json!({"products": ["company"], "additional": true}),
        )
        .await;
    assert_eq!(refused.status(), 502, "Finch's 400 to Perch is a bad gateway to the caller");
    let logs = captured_logs();
    // Perch's calls: everything but the employer's browser on the Connect page.
    let seen: Vec<_> = stack.finch.requests().into_iter().filter(|r| r.path != "/authorize").collect();
    assert!(seen.len() >= 5);
    for r in seen {
        assert!(
            logs.lines().any(|l| l.contains(&r.request_id) && l.contains("finch call")),
            "no log line for {} {} ({})",
            r.method,
            r.path,
            r.status
        );
    }
}

#[tokio::test]
async fn the_finch_client_does_not_follow_redirects() {
    let stack = TestStack::start().await;
    let elsewhere = format!("{}/sandbox/connections", stack.finch.base_url);
    stack.inject(json!({"path": "/connect/sessions", "status": 307, "location": elsewhere, "times": 1}));
    let (s, p) = problem(
        stack.post_json("/connect/sessions", Some(&stack.token("acme")), &json!({"products": ["company"]})).await,
    )
    .await;
    assert_eq!((s, p["code"].as_str().unwrap()), (502, "finch_rejected"));
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 1);
    assert_eq!(stack.finch_calls("POST", "/sandbox/connections"), 0, "the redirect was not followed");
}
