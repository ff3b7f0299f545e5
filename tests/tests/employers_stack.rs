//! Employers and entities on the local stack: moto through the real AWS SDK, the Finch
//! emulator over HTTP producing each case (a second login to the same company, an employer
//! picking entities, a renamed company), Perch's functions behind the local router. The
//! branches are in `employers.rs`; this is the real path — the `by_customer` index's
//! projection, the claim's transaction, the entity map's conditional updates.

use std::time::Duration;

use perch::flows::sweep;
use perch_tests::{TestStack, finch_login, location, query, sweep_settings};
use serde_json::{Value, json};

/// A whole redirect flow; the app URL's `outcome` and `connection_id`.
async fn connect_as(
    stack: &TestStack,
    customer: &str,
    additional: bool,
    username: &str,
    picks: Option<&[usize]>,
) -> (String, String) {
    let body =
        json!({"products": ["company", "directory"], "additional": additional, "customer_email": "ops@acme.test"});
    let s = stack.new_session(customer, body).await;
    let r = finch_login(&stack.http, s["connect_url"].as_str().unwrap(), "gusto", username, picks).await;
    assert_eq!(r.status(), 302);
    callback(stack, &location(&r)).await
}

async fn callback(stack: &TestStack, url: &str) -> (String, String) {
    let r = stack.get(url, None).await;
    assert_eq!(r.status(), 302, "the callback redirects to the app");
    let app = location(&r);
    (query(&app, "outcome").unwrap_or_default(), query(&app, "connection_id").unwrap_or_default())
}

fn live_at_finch(stack: &TestStack) -> usize {
    stack.finch.shared.world().connections.values().filter(|c| !c.disconnected).count()
}

async fn delete(stack: &TestStack, customer: &str, path: &str) -> (u16, Value) {
    let r = stack.http.delete(format!("{}{path}", stack.base)).bearer_auth(stack.token(customer)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_listing_names_the_employer_and_never_shows_a_duplicate() {
    let stack = TestStack::start().await;
    let (outcome, id) = connect_as(&stack, "acme", false, "good_user", None).await;
    assert_eq!(outcome, "created");
    let listed = stack.list("acme").await;
    let c = &listed[0];
    let at_finch = stack.finch.shared.world().connections[&id].clone();
    // Read through the by_customer index: every field is in its projection.
    assert_eq!(c["company_id"], json!(at_finch.company_id));
    assert_eq!((c["company_name"].as_str(), c["legal_name"].as_str()), (Some("acme, Inc."), Some("acme, Inc.")));
    assert_eq!((c["customer_name"].as_str(), c["customer_email"].as_str()), (Some("acme"), Some("ops@acme.test")));
    assert_eq!(
        (c["connection_type"].as_str(), c["authentication_method"].as_str()),
        (Some("provider"), Some("credential"))
    );
    assert_eq!((c["assisted"].as_bool(), c["client_type"].as_str()), (Some(false), Some("production")));
    assert_eq!(c["entities"][0]["name"], "acme, Inc.");
    assert_eq!(c["entities"][0]["source_id"], "EIN-10");

    // The same employer and provider again, under `acme-2`: the existing connection.
    let (outcome, again) = connect_as(&stack, "acme", true, "good_user", None).await;
    assert_eq!((outcome.as_str(), again.as_str()), ("duplicate", id.as_str()));
    assert_eq!(live_at_finch(&stack), 1, "the redundant connection is disconnected at Finch");
    assert_eq!(stack.list("acme").await.len(), 1);
    // A different login is another employer.
    let (outcome, other) = connect_as(&stack, "acme", true, "good_user+globex", None).await;
    assert_eq!(outcome, "created");
    assert_ne!(other, id);
    assert_eq!(stack.list("acme").await.len(), 2);

    // Disconnected, it frees the employer: connecting it again makes a new connection.
    assert_eq!(delete(&stack, "acme", &format!("/connections/{id}")).await.0, 204);
    let (outcome, fresh) = connect_as(&stack, "acme", true, "good_user", None).await;
    assert_eq!(outcome, "created");
    assert_ne!(fresh, id);
}

#[tokio::test]
async fn two_callbacks_for_the_same_employer_at_once_end_with_one_connection() {
    let stack = TestStack::start().await;
    // `acme` claims two Finch customer ids; Finch made a connection to the same company under
    // each (two Connects the employer finished in two tabs).
    let first = stack.new_session("acme", json!({"products": ["company"]})).await;
    let redirect = stack.config.redirect_uri.as_str();
    let code_a = perch_tests::finch_made(&stack.finch.shared, redirect, "acme", "acme", "good_user");
    let code_b = perch_tests::finch_made(&stack.finch.shared, redirect, "acme", "acme-2", "good_user");
    let second = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    assert_eq!(second["finch_customer_id"], "acme", "no connection yet: the first slot");
    // Claim `acme-2` through Perch's own store, as a session for slot 2 would.
    let acme = perch::domain::CustomerId::parse("acme").unwrap();
    let slot2 = perch::domain::FinchCustomerId::for_slot(&acme, 2);
    assert!(perch::store::ClaimFinchCustomer::claim_finch_customer(&*stack.app.store, &slot2, &acme, 2).await.unwrap());
    let state = |s: &Value| query(s["connect_url"].as_str().unwrap(), "state").unwrap();
    let url = |code: &str, s: &Value| format!("{}/connect/callback?code={code}&state={}", stack.base, state(s));
    let (url_a, url_b) = (url(&code_a, &first), url(&code_b, &second));
    let (a, b) = tokio::join!(callback(&stack, &url_a), callback(&stack, &url_b));
    let mut outcomes = [a.0.as_str(), b.0.as_str()];
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["created", "duplicate"]);
    assert_eq!(a.1, b.1, "both answer with the one connection");
    assert_eq!(stack.list("acme").await.len(), 1);
    assert_eq!(live_at_finch(&stack), 1);
}

#[tokio::test]
async fn entities_are_picked_kept_apart_and_disconnected_one_by_one() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let (outcome, id) = connect_as(&stack, "acme", false, "good_user", Some(&[0, 1, 2])).await;
    assert_eq!(outcome, "created");
    let listed = stack.list("acme").await;
    let names: Vec<&str> =
        listed[0]["entities"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["acme, Inc.", "acme East", "acme West"]);
    let ids: Vec<String> =
        listed[0]["entity_ids"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect();

    // Finch flags one entity: that entity changes, the connection does not.
    let r = stack
        .http
        .post(format!("{}/_emulator/connections/{id}/status", stack.finch.base_url))
        .json(&json!({"status": "reauth", "entity_id": ids[1]}))
        .send()
        .await
        .unwrap();
    let flipped: Value = r.json().await.unwrap();
    assert_eq!(flipped["webhook_status"], 200);
    let c = &stack.list("acme").await[0];
    assert_eq!(c["status"], "connected");
    let statuses: Vec<&str> = c["entities"].as_array().unwrap().iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["connected", "reauth", "connected"]);

    // One entity: Finch's /disconnect-entity, the connection stays.
    assert_eq!(delete(&stack, "acme", &format!("/connections/{id}/entities/{}", ids[0])).await.0, 204);
    assert_eq!(stack.finch_calls("POST", "/disconnect-entity"), 1);
    assert_eq!(stack.finch.shared.world().connections[&id].entities[0].status, "disconnected");
    let c = &stack.list("acme").await[0];
    assert_eq!(c["entity_ids"], json!(ids[1..]));
    // Again, an entity it does not list, someone else's connection.
    assert_eq!(delete(&stack, "acme", &format!("/connections/{id}/entities/{}", ids[0])).await.0, 204);
    assert_eq!(stack.finch_calls("POST", "/disconnect-entity"), 1, "not again");
    let (status, body) = delete(&stack, "acme", &format!("/connections/{id}/entities/not-an-entity")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(body["detail"], "No such entity.");
    assert_eq!(delete(&stack, "globex", &format!("/connections/{id}/entities/{}", ids[1])).await.0, 404);

    // The last two: the last one disconnects the connection.
    assert_eq!(delete(&stack, "acme", &format!("/connections/{id}/entities/{}", ids[1])).await.0, 204);
    assert_eq!(delete(&stack, "acme", &format!("/connections/{id}/entities/{}", ids[2])).await.0, 204);
    assert_eq!(stack.finch_calls("POST", "/disconnect-entity"), 2);
    assert_eq!(stack.finch_calls("POST", "/disconnect"), 1);
    assert!(stack.list("acme").await.is_empty());
    assert!(stack.finch.shared.world().connections[&id].disconnected);
    let raw = stack.raw_connection(&id).await.unwrap();
    assert!(!raw.contains_key("token_ciphertext"), "the token is destroyed");
}

#[tokio::test]
async fn a_renamed_company_reaches_the_listing_through_the_sweep() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let (_, id) = connect_as(&stack, "acme", false, "good_user", None).await;
    let r = stack
        .http
        .post(format!("{}/_emulator/connections/{id}/company", stack.finch.base_url))
        .json(&json!({"name": "Acme Holdings, Inc."}))
        .send()
        .await
        .unwrap();
    let sent: Value = r.json().await.unwrap();
    assert_eq!(sent["webhook_status"], 200, "company.updated delivered");
    assert!(stack.record(&id).await.refresh_requested_at.is_some());
    let before = stack.finch_calls("GET", "/employer/company");
    // The default recheck period: only what company.updated asked for is due.
    let r = sweep::run_round(&stack.app, &sweep_settings(&[]), tokio::time::Instant::now() + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(r.checked, 1);
    assert_eq!(stack.finch_calls("GET", "/employer/company"), before + 1);
    let c = &stack.list("acme").await[0];
    assert_eq!(c["company_name"], "Acme Holdings, Inc.");
    assert!(stack.record(&id).await.refresh_requested_at.is_none());
}
