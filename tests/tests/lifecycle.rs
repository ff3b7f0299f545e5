//! Re-authentication and disconnection on the local stack.

use perch::crypto::TokenCipher;
use perch_tests::{TestStack, captured_logs, location, query};
use serde_json::{Value, json};

async fn reauth(stack: &TestStack, customer: &str, id: &str, body: Value) -> reqwest::Response {
    stack.post_json(&format!("/connections/{id}/reauthenticate"), Some(&stack.token(customer)), &body).await
}

async fn delete(stack: &TestStack, customer: &str, id: &str) -> reqwest::Response {
    stack
        .http
        .delete(format!("{}/connections/{id}", stack.base))
        .bearer_auth(stack.token(customer))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn reauthentication_swaps_the_token_on_the_same_connection() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    stack.finch.shared.world().connections.get_mut(&id).unwrap().status = "reauth".into();

    let r = reauth(&stack, "acme", &id, json!({})).await;
    assert_eq!(r.status(), 201);
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["reauthenticates"], id.as_str());
    assert!(query(s["connect_url"].as_str().unwrap(), "state").is_some());

    let r = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await;
    let back = location(&stack.get(&location(&r), None).await);
    assert_eq!(query(&back, "outcome").as_deref(), Some("reauthenticated"));
    assert_eq!(query(&back, "connection_id").as_deref(), Some(id.as_str()));

    let after = stack.raw_connection(&id).await.unwrap();
    assert_ne!(after["token_ciphertext"], before["token_ciphertext"]);
    assert_eq!(after["status"].as_s().unwrap(), "connected");
    let rec = stack.record(&id).await;
    let token = stack.app.cipher.decrypt(rec.token.as_ref().unwrap(), &rec.connection_id, &rec.customer).await.unwrap();
    let newest = stack.finch.shared.world().tokens.iter().filter(|(_, t)| t.connection_id == id).count();
    assert_eq!(newest, 2, "Finch issued a second token for the same connection");
    assert!(stack.issued_tokens().contains(&token.expose_secret().to_owned()));
    assert_eq!(stack.list("acme").await.len(), 1);

    // Embedded reauthentication with products and expiry is accepted too.
    let r = reauth(&stack, "acme", &id, json!({"flow": "embedded", "products": ["company"], "minutes_to_expire": 30}))
        .await;
    assert_eq!(r.status(), 201);
    assert!(r.json::<Value>().await.unwrap()["state"].is_string());
    assert!(stack.finch.violations().is_empty(), "{:?}", stack.finch.violations());
}

#[tokio::test]
async fn reauthentication_of_an_id_the_caller_does_not_own_is_a_404() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    for (who, target) in [("globex", id.as_str()), ("acme", "no-such-connection"), ("acme", "bad%23id")] {
        let r = reauth(&stack, who, target, json!({})).await;
        assert_eq!(r.status(), 404, "{who} {target}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "not_found");
    }
    let r = reauth(&stack, "acme", &id, json!({"products": ["payroll"]})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(stack.finch_calls("POST", "/connect/sessions/reauthenticate"), 0);
    assert_eq!(stack.raw_connection(&id).await.unwrap(), before);
}

#[tokio::test]
async fn disconnect_revokes_at_finch_destroys_the_token_and_keeps_a_tombstone() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let r = delete(&stack, "acme", &id).await;
    assert_eq!(r.status(), 204);

    assert!(stack.finch.shared.world().connections[&id].disconnected);
    assert!(stack.finch.shared.world().tokens.values().all(|t| t.revoked));
    let item = stack.raw_connection(&id).await.unwrap();
    assert!(!item.contains_key("token_ciphertext") && !item.contains_key("token_key_id"));
    assert_eq!(item["status"].as_s().unwrap(), "disconnected");
    assert!(item.contains_key("disconnected_at"));
    assert_eq!(item["customer_id"].as_s().unwrap(), "acme");
    assert_eq!(item["provider_id"].as_s().unwrap(), "gusto");
    let finch_rid = stack.finch.requests().into_iter().find(|r| r.path == "/disconnect").unwrap().request_id;
    assert_eq!(item["last_finch_request_id"].as_s().unwrap(), &finch_rid);
    assert!(stack.list("acme").await.is_empty(), "the tombstone leaves the listing");

    // Idempotent, and Finch is not called again without a token.
    assert_eq!(delete(&stack, "acme", &id).await.status(), 204);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 1);
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains(&id) && l.contains("connection status changed") && l.contains("disconnected"))
    );
    // A new connect for the customer makes a new connection (Finch has no reconnect).
    let again = stack.connect("acme").await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn a_disconnect_interrupted_by_finch_finishes_on_retry() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    stack.inject(json!({"path": "/disconnect", "status": 500, "times": 3}));
    let r = delete(&stack, "acme", &id).await;
    assert_eq!(r.status(), 502);
    let item = stack.raw_connection(&id).await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "disconnecting");
    assert!(item.contains_key("token_ciphertext"), "the token is kept until Finch has revoked it");
    assert!(!stack.finch.shared.world().connections[&id].disconnected);

    assert_eq!(delete(&stack, "acme", &id).await.status(), 204);
    assert!(stack.finch.shared.world().connections[&id].disconnected);
    assert!(!stack.raw_connection(&id).await.unwrap().contains_key("token_ciphertext"));
}

#[tokio::test]
async fn a_token_already_revoked_at_finch_still_disconnects_locally() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let token = stack.issued_tokens().pop().unwrap();
    let r = stack
        .http
        .post(format!("{}/disconnect", stack.finch.base_url))
        .header("finch-api-version", "2020-09-17")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(delete(&stack, "acme", &id).await.status(), 204);
    let item = stack.raw_connection(&id).await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "disconnected");
    assert!(!item.contains_key("token_ciphertext"));
}

#[tokio::test]
async fn five_disconnects_at_once_call_finch_once_and_all_succeed() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    // The first disconnect to reach Finch waits there until the other four are under way.
    stack.inject(json!({"path": "/disconnect", "hold": "disconnect", "times": 1}));
    let all = futures_util::future::join_all((0..5).map(|_| delete(&stack, "acme", &id)));
    let released = async {
        stack.finch.shared.holds().arrived("disconnect").await;
        stack.finch.shared.holds().release("disconnect");
    };
    let (answers, ()) = tokio::join!(all, released);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, vec![204; 5]);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 1, "only the call whose mark succeeded calls Finch");
    let item = stack.raw_connection(&id).await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "disconnected");
    assert!(!item.contains_key("token_ciphertext") && !item.contains_key("disconnect_lease"));
}

#[tokio::test]
async fn another_customer_cannot_disconnect_and_learns_nothing() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    let r = delete(&stack, "globex", &id).await;
    assert_eq!(r.status(), 404);
    let unknown = delete(&stack, "globex", "no-such-connection").await;
    assert_eq!(unknown.status(), 404);
    let (a, b): (Value, Value) = (r.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(a["detail"], b["detail"], "a foreign id looks exactly like a missing one");
    assert_eq!(stack.raw_connection(&id).await.unwrap(), before);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 0);
}
