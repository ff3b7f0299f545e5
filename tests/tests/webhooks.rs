//! Finch webhooks delivered by the emulator (signed as Finch signs) to `POST /finch/webhooks`.

use perch_tests::{TestStack, captured_logs};
use serde_json::{Value, json};

async fn send(stack: &TestStack, payload: Value, event_id: Option<&str>, timestamp: Option<i64>) -> Value {
    stack
        .http
        .post(format!("{}/_emulator/webhooks/send", stack.finch.base_url))
        .json(&json!({"payload": payload, "event_id": event_id, "timestamp": timestamp}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn account_updated(id: &str, status: &str, method: Value) -> Value {
    json!({"connection_id": id, "company_id": "c", "account_id": "a", "entity_id": null,
           "event_type": "account.updated", "data": {"status": status, "authentication_method": method}})
}

async fn raw_post(stack: &TestStack, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut r = stack
        .http
        .post(format!("{}/finch/webhooks", stack.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn account_updated_applies_at_once_and_tells_the_app() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    let flipped = stack.flip(&id, "reauth").await;
    assert_eq!(flipped["webhook_status"], 200);
    assert_eq!(stack.stored_status(&id).await, "reauth");
    let list = stack.list("acme").await;
    assert_eq!(list[0]["status"], "reauth");
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains(&id) && l.contains("connection status changed") && l.contains("webhook"))
    );

    // Both shapes of authentication_method, and back to connected.
    let r = send(&stack, account_updated(&id, "connected", json!("credential")), None, Some(now() + 1)).await;
    assert_eq!(r["webhook_status"], 200);
    assert_eq!(stack.stored_status(&id).await, "connected");
}

#[tokio::test]
async fn redeliveries_and_older_events_change_nothing() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    let t = now();
    let r = send(&stack, account_updated(&id, "reauth", json!({"type": "credential"})), Some("msg_one"), Some(t)).await;
    assert_eq!(r["webhook_status"], 200);
    let version = stack.raw_connection(&id).await.unwrap()["version"].clone();

    // The same event again (Finch redelivers): acknowledged, nothing applied.
    let r = send(&stack, account_updated(&id, "connected", json!("credential")), Some("msg_one"), Some(t)).await;
    assert_eq!(r["webhook_status"], 200);
    assert_eq!(stack.stored_status(&id).await, "reauth");
    // An older event arriving late: acknowledged, not applied.
    let r = send(&stack, account_updated(&id, "connected", json!("credential")), Some("msg_older"), Some(t - 60)).await;
    assert_eq!(r["webhook_status"], 200);
    assert_eq!(stack.stored_status(&id).await, "reauth");
    assert_eq!(stack.raw_connection(&id).await.unwrap()["version"], version);
}

#[tokio::test]
async fn forged_stale_and_malformed_deliveries_are_refused_without_a_trace() {
    let stack = TestStack::start().await;
    let secret = stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    let body = account_updated(&id, "reauth", json!("credential")).to_string();
    let signed = |event_id: &str, ts: i64, key: &str, body: &str| -> Vec<(&'static str, String)> {
        let sig = finch_emulator::webhooks::sign(key, event_id, ts, body).unwrap();
        vec![("finch-event-id", event_id.to_owned()), ("finch-timestamp", ts.to_string()), ("finch-signature", sig)]
    };
    let other_key = "c2VjcmV0LXRoYXQtaXMtbm90LXBlcmNocy1zZWNyZXQ=";

    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(Headers, String, u16)> = vec![
        (vec![], body.clone(), 400),
        (signed("msg_a", now(), other_key, &body), body.clone(), 401),
        (signed("msg_b", now() - 400, &secret, &body), body.clone(), 401),
        (signed("msg_c", now() + 400, &secret, &body), body.clone(), 401),
        (signed("msg_d", now(), &secret, &body), body.replace("reauth", "connected"), 401),
        (
            signed("msg_e", now(), &secret, &body)
                .into_iter()
                .map(|(k, v)| if k == "finch-signature" { (k, v.replacen("v1,", "v2,", 1)) } else { (k, v) })
                .collect(),
            body.clone(),
            401,
        ),
        (signed("msg_f", now(), &secret, "{not json"), "{not json".to_owned(), 400),
        (
            signed("msg_g", now(), &secret, r#"{"event_type":"account.updated","connection_id":"x","data":{}}"#),
            r#"{"event_type":"account.updated","connection_id":"x","data":{}}"#.to_owned(),
            400,
        ),
    ];
    for (i, (headers, body, want)) in cases.into_iter().enumerate() {
        let (status, problem) = raw_post(&stack, &headers, &body).await;
        assert_eq!(status, want, "case {i}: {problem}");
        assert_eq!(problem["status"], want);
    }
    assert_eq!(stack.raw_connection(&id).await.unwrap(), before);

    // A refused malformed delivery left no event id behind: its corrected retry is processed.
    let good = account_updated(&id, "reauth", json!("credential")).to_string();
    let (status, v) = raw_post(&stack, &signed("msg_f", now(), &secret, &good), &good).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("applied")));
    // Several signatures (a rotation): one matching v1 is enough.
    let good2 = account_updated(&id, "connected", json!("credential")).to_string();
    let mut h = signed("msg_h", now() + 1, &secret, &good2);
    h[2].1 = format!("v1,AAAA v2,BBBB {}", h[2].1);
    let (status, v) = raw_post(&stack, &h, &good2).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("applied")));
}

#[tokio::test]
async fn other_events_and_unknown_connections_are_acknowledged_and_ignored() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();
    let job = json!({"connection_id": id, "company_id": "c", "account_id": "a", "event_type": "job.data_sync_all.completed",
                     "data": {"job_id": "j", "job_url": "https://example.com/j"}});
    assert_eq!(send(&stack, job, None, None).await["webhook_status"], 200);
    let r = send(&stack, account_updated("not-a-perch-connection", "reauth", json!("credential")), None, None).await;
    assert_eq!(r["webhook_status"], 200);
    assert_eq!(stack.raw_connection(&id).await.unwrap(), before);
}

#[tokio::test]
async fn an_entity_leaving_does_not_disconnect_the_connection() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let id = stack.connect("acme").await;
    let mut event = account_updated(&id, "disconnected", json!("credential"));
    event["entity_id"] = json!("8d1f4ef1-2b7a-4a7c-9a2e-0b6a1f7d9c11");
    assert_eq!(send(&stack, event, None, Some(now() + 1)).await["webhook_status"], 200);
    assert_eq!(stack.stored_status(&id).await, "connected");
    // Without an entity, Finch is saying the connection itself is disconnected.
    assert_eq!(
        send(&stack, account_updated(&id, "disconnected", json!("credential")), None, Some(now() + 2)).await["webhook_status"],
        200
    );
    assert_eq!(stack.stored_status(&id).await, "disconnected");
    assert!(
        stack.raw_connection(&id).await.unwrap().contains_key("token_ciphertext"),
        "kept until the app disconnects"
    );
}
