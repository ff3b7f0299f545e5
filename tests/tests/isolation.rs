//! The tenant isolation matrix: customer B (globex) acting on everything of customer A (acme)
//! on every route — connection ids, states, codes, cursors — is refused without revealing
//! that A's things exist, and A's data is unchanged. Every JWT route refuses a token without a
//! usable customer claim.

use perch_tests::{TestStack, finch_login, location, query};
use serde_json::{Value, json};

/// Every JWT route with a request B might send, `{id}` standing for a connection id.
const JWT_ROUTES: &[(&str, &str)] = &[
    ("POST", "/connect/sessions"),
    ("POST", "/connect/callback"),
    ("GET", "/connections"),
    ("POST", "/connections/{id}/reauthenticate"),
    ("DELETE", "/connections/{id}"),
];

async fn call(stack: &TestStack, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", stack.base);
    let r = match method {
        "GET" => stack.http.get(url),
        "DELETE" => stack.http.delete(url),
        _ => stack.http.post(url).json(&body),
    }
    .bearer_auth(token)
    .send()
    .await
    .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn customer_b_cannot_see_or_touch_anything_of_customer_a() {
    let stack = TestStack::start().await;
    let a_id = stack.connect("acme").await;
    let a_before = stack.raw_connection(&a_id).await.unwrap();
    let b = stack.token("globex");
    let mut checks = 0;

    // A's connection id on every route that takes one: the same 404 as an id that never existed.
    for (method, template) in [("POST", "/connections/{id}/reauthenticate"), ("DELETE", "/connections/{id}")] {
        let (s1, p1) = call(&stack, method, &template.replace("{id}", &a_id), &b, json!({})).await;
        let (s2, p2) = call(&stack, method, &template.replace("{id}", "never-existed"), &b, json!({})).await;
        assert_eq!((s1, s2), (404, 404), "{method} {template}");
        assert_eq!((&p1["code"], &p1["detail"]), (&p2["code"], &p2["detail"]), "existence must not leak");
        checks += 2;
    }
    // A's connections never appear in B's listing, not even through A's cursor.
    let (_, list) = call(&stack, "GET", "/connections", &b, json!(null)).await;
    assert_eq!(list["connections"], json!([]));
    // Another employer of A's (the same one again would be the same connection).
    let more = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    let r = finch_login(&stack.http, more["connect_url"].as_str().unwrap(), "gusto", "good_user+2", None).await;
    assert_eq!(stack.get(&location(&r), None).await.status(), 302);
    let a_page: Value = stack.get("/connections?limit=1", Some(&stack.token("acme"))).await.json().await.unwrap();
    let cursor = a_page["next_cursor"].as_str().unwrap();
    let (s, list) = call(&stack, "GET", &format!("/connections?cursor={cursor}"), &b, json!(null)).await;
    assert_eq!((s, list["connections"].clone()), (200, json!([])));
    checks += 2;

    // A's embedded state (with A's code): refused, and A can still use both.
    let e = stack.new_session("acme", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    let html = finch_login(&stack.http, e["connect_url"].as_str().unwrap(), "gusto", "good_user+3", None).await;
    let html = html.text().await.unwrap();
    let code = html.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let (s, p) = call(&stack, "POST", "/connect/callback", &b, json!({"code": code, "state": e["state"]})).await;
    assert_eq!((s, p["code"].as_str()), (400, Some("state_invalid")));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 2, "refused before any exchange");
    let r = stack
        .post_json("/connect/callback", Some(&stack.token("acme")), &json!({"code": code, "state": e["state"]}))
        .await;
    assert_eq!(r.status(), 201, "A's state and code survived B's attempt");
    checks += 1;

    // A's redirect callback URL opened by B's browser completes A's flow, for A.
    let s = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    let r = finch_login(&stack.http, s["connect_url"].as_str().unwrap(), "gusto", "good_user+4", None).await;
    let r = stack.get(&location(&r), None).await;
    let back = location(&r);
    let new_id = query(&back, "connection_id").unwrap();
    assert_eq!(stack.raw_connection(&new_id).await.unwrap()["customer_id"].as_s().unwrap(), "acme");
    let (_, list) = call(&stack, "GET", "/connections", &b, json!(null)).await;
    assert_eq!(list["connections"], json!([]));
    checks += 1;

    // Nothing of A changed.
    assert_eq!(stack.raw_connection(&a_id).await.unwrap(), a_before);
    assert_eq!(stack.list("acme").await.len(), 4);
    assert!(checks >= 6);
}

#[tokio::test]
async fn every_jwt_route_refuses_a_token_without_a_usable_customer_claim() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    let bad_claims = [
        json!({"sub": "u1"}),
        json!({"customer_id": ""}),
        json!({"customer_id": "x".repeat(129)}),
        json!({"customer_id": "acme#other"}),
        json!({"customer_id": ["acme"]}),
    ];
    let mut refused = 0;
    for claims in &bad_claims {
        let token = stack.auth.issue_claims(claims.as_object().unwrap()).unwrap();
        for (method, template) in JWT_ROUTES {
            let path = template.replace("{id}", &id);
            let (s, p) = call(&stack, method, &path, &token, json!({"products": ["company"], "code": "c"})).await;
            assert_eq!((s, p["code"].as_str()), (401, Some("unauthenticated")), "{method} {path} with {claims}");
            refused += 1;
        }
    }
    // And no token at all: API Gateway's (here perch-local's) own 401.
    for (method, template) in JWT_ROUTES {
        let url = format!("{}{}", stack.base, template.replace("{id}", &id));
        let r = match *method {
            "GET" => stack.http.get(url),
            "DELETE" => stack.http.delete(url),
            _ => stack.http.post(url).json(&json!({})),
        }
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
        refused += 1;
    }
    assert_eq!(refused, bad_claims.len() * JWT_ROUTES.len() + JWT_ROUTES.len());
    assert_eq!(stack.raw_connection(&id).await.unwrap(), before);
    assert_eq!(stack.finch_calls("POST", "/connect/sessions"), 1);
}
