//! The Connect flow end to end: moto + the Finch emulator + Perch's handlers over HTTP.

use perch::crypto::TokenCipher;
use perch_tests::{APP_RETURN_URL, TestStack, location, query};
use serde_json::{Value, json};

#[tokio::test]
async fn redirect_flow_stores_an_encrypted_connection_and_lists_it() {
    let stack = TestStack::start().await;

    let session =
        stack.new_session("acme", json!({"products": ["company", "directory"], "customer_name": "Acme"})).await;
    let connect_url = session["connect_url"].as_str().unwrap();
    assert!(session["session_id"].is_string());
    assert_eq!(session["finch_customer_id"], "acme");
    let state = query(connect_url, "state").expect("connect_url carries Perch's state");

    let r = stack.login_at_finch(connect_url).await;
    assert_eq!(r.status(), 302);
    let callback = location(&r);
    assert!(callback.starts_with(&format!("{}/connect/callback", stack.base)));
    assert_eq!(query(&callback, "state").as_deref(), Some(state.as_str()));

    let r = stack.get(&callback, None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let back = location(&r);
    assert!(back.starts_with(APP_RETURN_URL), "{back}");
    assert_eq!(query(&back, "outcome").as_deref(), Some("created"));
    let connection_id = query(&back, "connection_id").unwrap();
    for t in stack.issued_tokens() {
        assert!(!back.contains(&t), "the app URL must never carry the token");
    }

    let list = stack.list("acme").await;
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(c["connection_id"], connection_id.as_str());
    assert_eq!(c["provider_id"], "gusto");
    assert_eq!(c["company_name"], "Acme, Inc.");
    assert_eq!(c["status"], "connected");
    assert_eq!(c["products"], json!(["company", "directory"]));
    assert_eq!(c["entity_ids"].as_array().unwrap().len(), 1);
    assert!(c["created_at"].is_string() && c["updated_at"].is_string());
    assert!(c.get("token_ciphertext").is_none());

    // Finch saw exactly one exchange, with redirect_uri (the emulator refuses a mismatch).
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
    assert!(stack.finch.violations().is_empty(), "{:?}", stack.finch.violations());
}

#[tokio::test]
async fn stored_item_holds_only_ciphertext_bound_to_its_connection_and_customer() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let tokens = stack.issued_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];

    let item = stack.raw_connection(&id).await.expect("item");
    let dump = format!("{item:?}");
    assert!(!dump.contains(token.as_str()), "plaintext token in DynamoDB");
    let ct = item["token_ciphertext"].as_s().unwrap();
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD.decode(ct).unwrap();
    assert!(!String::from_utf8_lossy(&blob).contains(token.as_str()));

    let decrypt = |conn: &str, cust: &str| {
        stack
            .kms
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob.clone()))
            .encryption_context("purpose", "finch-access-token")
            .encryption_context("connection_id", conn)
            .encryption_context("customer_id", cust)
            .send()
    };
    let plain = decrypt(&id, "acme").await.expect("decrypts under its own context");
    assert_eq!(plain.plaintext.unwrap().as_ref(), token.as_bytes());
    assert!(decrypt("another-connection", "acme").await.is_err(), "moved to another connection, it must not decrypt");
    assert!(decrypt(&id, "globex").await.is_err(), "moved to another customer, it must not decrypt");

    // The same through Perch's own cipher.
    let rec = stack.record(&id).await;
    let other = perch::domain::ConnectionId::parse("c-elsewhere").unwrap();
    assert!(stack.app.cipher.decrypt(rec.token.as_ref().unwrap(), &other, &rec.customer).await.is_err());
    let ok = stack.app.cipher.decrypt(rec.token.as_ref().unwrap(), &rec.connection_id, &rec.customer).await.unwrap();
    assert_eq!(ok.expose_secret(), token);
}

#[tokio::test]
async fn replayed_callback_neither_exchanges_again_nor_duplicates() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    assert_eq!(stack.get(&cb, None).await.status(), 302);

    // Back in the app, told the link was used already.
    let again = stack.get(&cb, None).await;
    assert_eq!(again.status(), 302);
    let back = location(&again);
    assert!(back.starts_with(APP_RETURN_URL), "{back}");
    assert_eq!(query(&back, "outcome").as_deref(), Some("error"));
    assert_eq!(query(&back, "reason").as_deref(), Some("state_invalid"));
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1, "a replay must not reach Finch");
    assert_eq!(stack.list("acme").await.len(), 1);
}

#[tokio::test]
async fn concurrent_replays_of_one_callback_make_one_connection() {
    let stack = TestStack::start().await;
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let (a, b, c) = tokio::join!(stack.get(&cb, None), stack.get(&cb, None), stack.get(&cb, None));
    let outcomes: Vec<Option<String>> = [a, b, c].iter().map(|r| query(&location(r), "outcome")).collect();
    let created = outcomes.iter().filter(|o| o.as_deref() == Some("created")).count();
    assert_eq!(created, 1, "exactly one of the racing callbacks succeeds: {outcomes:?}");
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
    assert_eq!(stack.list("acme").await.len(), 1);
}

#[tokio::test]
async fn embedded_flow_exchanges_without_redirect_uri_and_is_idempotent() {
    let stack = TestStack::start().await;
    let s = stack.new_session("acme", json!({"flow": "embedded", "products": ["company"]})).await;
    let connect_url = s["connect_url"].as_str().unwrap();
    assert!(query(connect_url, "state").is_none(), "embedded flow: the SDK carries the state");
    let state = s["state"].as_str().expect("state for the SDK").to_owned();

    let page = stack.login_at_finch(connect_url).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let code =
        html.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).expect("code on the page").to_owned();

    let token = stack.token("acme");
    let r = stack.post_json("/connect/callback", Some(&token), &json!({"code": code, "state": state})).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outcome"], "created");
    let id = v["connection"]["connection_id"].as_str().unwrap().to_owned();
    assert!(!v.to_string().contains(&stack.issued_tokens()[0]));

    // The frontend retrying the same code (with a fresh state) gets the same connection.
    let fresh =
        stack.new_session("acme", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    let r = stack.post_json("/connect/callback", Some(&token), &json!({"code": code, "state": fresh["state"]})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outcome"], "already_connected");
    assert_eq!(v["connection"]["connection_id"], id.as_str());
    assert_eq!(stack.finch_calls("POST", "/auth/token"), 1);
    assert!(stack.finch.violations().is_empty(), "{:?}", stack.finch.violations());
}

#[tokio::test]
async fn finch_customer_id_is_stable_and_suffixed_only_when_asked() {
    let stack = TestStack::start().await;
    let a = stack.new_session("acme", json!({"products": ["company"]})).await;
    let b = stack.new_session("acme", json!({"products": ["company", "directory"]})).await;
    assert_eq!(a["finch_customer_id"], "acme");
    assert_eq!(a["session_id"], b["session_id"], "Finch refreshes the staged session for the same customer_id");

    stack.connect("acme").await;
    let extra = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    assert_eq!(extra["finch_customer_id"], "acme-2");
    let again = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    assert_eq!(again["finch_customer_id"], "acme-2", "a dropped-off additional flow keeps its id");
    assert_eq!(extra["session_id"], again["session_id"]);
}

#[tokio::test]
async fn a_customer_id_held_by_another_customer_is_never_reused() {
    let stack = TestStack::start().await;
    // Customer `acme` takes slot 2 (`acme-2`) first ...
    stack.connect("acme").await;
    let extra = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    assert_eq!(extra["finch_customer_id"], "acme-2");
    // ... so customer `acme-2` cannot be given that Finch customer_id.
    let other = stack.new_session("acme-2", json!({"products": ["company"]})).await;
    assert_eq!(other["finch_customer_id"], "acme-2-2");
    assert_ne!(other["session_id"], extra["session_id"]);
}

#[tokio::test]
async fn connection_already_exists_becomes_a_reauthentication_of_the_same_connection() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    let before = stack.raw_connection(&id).await.unwrap();

    let s = stack.new_session("acme", json!({"products": ["company", "directory"]})).await;
    assert_eq!(s["reauthenticates"], id.as_str());
    let r = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await;
    let r = stack.get(&location(&r), None).await;
    assert_eq!(r.status(), 302);
    let back = location(&r);
    assert_eq!(query(&back, "outcome").as_deref(), Some("reauthenticated"));
    assert_eq!(query(&back, "connection_id").as_deref(), Some(id.as_str()));

    let after = stack.raw_connection(&id).await.unwrap();
    assert_eq!(after["version"].as_n().unwrap(), "2");
    assert_ne!(after["token_ciphertext"], before["token_ciphertext"], "the new token replaced the old one");
    assert_eq!(after["created_at"], before["created_at"]);
    assert_eq!(stack.list("acme").await.len(), 1, "no duplicate connection");
}

#[tokio::test]
async fn a_connection_exchanged_but_never_stored_is_recovered_by_the_next_connect() {
    let stack = TestStack::start().await;
    // Perch exchanged the code, then failed to store: simulate it by exchanging it ourselves.
    let cb = stack.callback_url_for("acme", json!({"products": ["company"]})).await;
    let code = query(&cb, "code").unwrap();
    let emu = finch_emulator::EmulatorConfig::default();
    let r = stack
        .http
        .post(format!("{}/auth/token", stack.finch.base_url))
        .header("finch-api-version", "2020-09-17")
        .json(&json!({"code": code, "client_id": emu.client_id, "client_secret": emu.client_secret, "redirect_uri": stack.config.redirect_uri.as_str()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let orphan: Value = r.json().await.unwrap();
    assert!(stack.list("acme").await.is_empty());

    let s = stack.new_session("acme", json!({"products": ["company"]})).await;
    assert_eq!(s["reauthenticates"], orphan["connection_id"]);
    let r = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await;
    assert_eq!(stack.get(&location(&r), None).await.status(), 302);
    let list = stack.list("acme").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["connection_id"], orphan["connection_id"]);
}

#[tokio::test]
async fn connections_page_through_a_cursor_of_the_callers_own_partition() {
    let stack = TestStack::start().await;
    stack.connect("acme").await;
    for i in 0..2 {
        // Other employers (other logins): the same one again would be the same connection.
        let s = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
        let url = s["connect_url"].as_str().unwrap();
        let r = perch_tests::finch_login(&stack.http, url, "gusto", &format!("good_user+{i}"), None).await;
        assert_eq!(stack.get(&location(&r), None).await.status(), 302);
    }
    let token = stack.token("acme");
    let r: Value = stack.get("/connections?limit=2", Some(&token)).await.json().await.unwrap();
    assert_eq!(r["connections"].as_array().unwrap().len(), 2);
    let cursor = r["next_cursor"].as_str().expect("a second page").to_owned();
    let r2: Value =
        stack.get(&format!("/connections?limit=2&cursor={cursor}"), Some(&token)).await.json().await.unwrap();
    let mut ids: Vec<Value> = r["connections"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r2["connections"].as_array().unwrap())
        .map(|c| c["connection_id"].clone())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // Another customer replaying acme's cursor sees nothing of acme's.
    let g: Value =
        stack.get(&format!("/connections?cursor={cursor}"), Some(&stack.token("globex"))).await.json().await.unwrap();
    assert_eq!(g["connections"].as_array().unwrap().len(), 0);
}
