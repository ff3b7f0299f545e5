//! Employers and entities, in process (see `perch_tests::fast`): who the employer behind a
//! connection is and how that is kept fresh, one connection per employer and provider (seed
//! 004's composite uniqueness), and multi-entity connections — each branch on the memory
//! adapters against the Finch emulator in this process. `employers_stack.rs` runs the real path.

use std::time::Duration;

use perch::domain::{ConnectionId, ConnectionState, ConnectionStatus, Error};
use perch::flows::callback::Outcome;
use perch::flows::lifecycle::{self, Disconnected};
use perch::flows::sweep;
use perch::flows::webhook::{self, Handled};
use perch::store::ReadConnection;
use perch_tests::fast::Fast;
use perch_tests::sweep_settings;
use serde_json::{Value, json};
use time::OffsetDateTime;

async fn stored(f: &Fast, id: &ConnectionId) -> perch::store::ConnectionRecord {
    f.mem.store.get_connection(id).await.unwrap().expect("stored")
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

async fn deliver(f: &Fast, body: &Value) -> Result<webhook::Outcome, Error> {
    let (id, ts, sig, raw) = f.webhook(body, OffsetDateTime::now_utc().unix_timestamp() + 1);
    webhook::handle(&f.app, Some(&id), Some(&ts), Some(&sig), &raw).await
}

/// A whole redirect flow for `customer` (an additional one when `additional`), logging in as
/// `username` at `provider`, through the entity picker with `picks`.
async fn connect_as(
    f: &Fast,
    customer: &str,
    additional: bool,
    provider: &str,
    username: &str,
    picks: Option<&[usize]>,
) -> perch::flows::callback::CallbackOutcome {
    let body =
        json!({"products": ["company", "directory"], "additional": additional, "customer_email": "ops@acme.test"});
    let s = f.session(customer, body).await.expect("session");
    let (code, state) = f.login_as(&s.connect_url, provider, username, picks).await;
    f.redirect_callback(&code, Some(&state)).await.expect("callback")
}

fn emulated(f: &Fast, id: &ConnectionId) -> finch_emulator::world::Connection {
    f.finch.shared.world().connections[id.as_str()].clone()
}

fn live_at_finch(f: &Fast) -> usize {
    f.finch.shared.world().connections.values().filter(|c| !c.disconnected).count()
}

// --- who the employer is ------------------------------------------------------------------

#[tokio::test]
async fn the_listing_says_which_employer_a_connection_is() {
    let f = Fast::start().await;
    let o = connect_as(&f, "acme", false, "gusto", "good_user", None).await;
    assert_eq!(o.outcome, Outcome::Created);
    let at_finch = emulated(&f, &o.connection.connection_id);
    let c = serde_json::to_value(&o.connection).unwrap();
    assert_eq!(c["company_id"], json!(at_finch.company_id), "Finch's company id");
    assert_eq!(c["legal_name"], "acme, Inc.");
    assert_eq!(c["company_name"], "acme, Inc.");
    assert_eq!(c["customer_name"], "acme");
    assert_eq!(c["customer_email"], "ops@acme.test");
    assert_eq!(c["connection_type"], "provider");
    assert_eq!(c["authentication_method"], "credential");
    assert_eq!(c["assisted"], false);
    assert_eq!(c["client_type"], "production");
    let entity = &at_finch.entities[0];
    assert_eq!(
        c["entities"],
        json!([{"entity_id": entity.id, "name": "acme, Inc.", "source_id": "EIN-10", "status": "connected"}])
    );
    assert_eq!(c["entity_ids"], json!([entity.id]));
    // The listing is the same view.
    let page = perch::flows::session::list_connections(&f.app, &Fast::customer("acme"), None, None).await.unwrap();
    assert_eq!(serde_json::to_value(&page.items[0]).unwrap(), c);
}

#[tokio::test]
async fn an_assisted_connection_learns_its_legal_name_once_finch_has_the_data() {
    let f = Fast::start().await;
    let s = f.session("acme", json!({"products": ["company"], "manual": true})).await.unwrap();
    let (code, state) = f.login_as(&s.connect_url, "gusto", "good_user", None).await;
    let o = f.redirect_callback(&code, Some(&state)).await.unwrap();
    let id = o.connection.connection_id.clone();
    // Finch answers 202 for the company until the first pull: the customer's name stands in.
    assert_eq!((o.connection.status.as_str(), o.connection.assisted), ("pending", true));
    assert_eq!(o.connection.employer.legal_name, None);
    assert_eq!(o.connection.company_name.as_deref(), Some("acme"));
    // Finch connects it and says so; the webhook asks the sweep to read the company.
    f.finch.shared.world().connections.get_mut(id.as_str()).unwrap().status = "connected".into();
    let body = json!({"connection_id": id.as_str(), "company_id": "x", "account_id": "x", "event_type": "account.updated",
                      "data": {"status": "connected", "authentication_method": "assisted"}});
    assert_eq!(deliver(&f, &body).await.unwrap().status, Handled::Applied);
    assert!(stored(&f, &id).await.refresh_requested_at.is_some());
    let before = f.finch_calls("GET", "/employer/company");
    // The default recheck period: only the connection asked for is due.
    let r = sweep::run_round(&f.app, &sweep_settings(&[]), far()).await.unwrap();
    assert_eq!(r.checked, 1);
    assert_eq!(f.finch_calls("GET", "/employer/company"), before + 1);
    let rec = stored(&f, &id).await;
    assert_eq!(rec.employer.legal_name.as_deref(), Some("acme, Inc."));
    assert_eq!(rec.summary().company_name.as_deref(), Some("acme, Inc."));
    assert!(rec.refresh_requested_at.is_none(), "the request is answered");
    // Known now: the next rounds neither check it nor ask for the company.
    let r = sweep::run_round(&f.app, &sweep_settings(&[]), far()).await.unwrap();
    assert_eq!(r.checked, 0);
    let r = sweep::run_round(&f.app, &sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]), far()).await.unwrap();
    assert_eq!(r.checked, 1);
    assert_eq!(f.finch_calls("GET", "/employer/company"), before + 1, "nothing new to learn from the company");
}

#[tokio::test]
async fn company_updated_has_the_sweep_read_the_new_name_and_entities() {
    let f = Fast::start().await;
    let id = connect_as(&f, "acme", false, "gusto", "good_user", None).await.connection.connection_id;
    {
        let mut w = f.finch.shared.world();
        let c = w.connections.get_mut(id.as_str()).unwrap();
        c.company_name = "Acme Holdings, Inc.".into();
        c.entities[0].name = "Acme Holdings, Inc.".into();
    }
    let body = json!({"connection_id": id.as_str(), "company_id": "x", "account_id": "x",
                      "event_type": "company.updated", "data": null});
    assert_eq!(deliver(&f, &body).await.unwrap().status, Handled::RefreshRequested);
    sweep::run_round(&f.app, &sweep_settings(&[]), far()).await.unwrap();
    let rec = stored(&f, &id).await;
    assert_eq!(rec.employer.legal_name.as_deref(), Some("Acme Holdings, Inc."));
    assert_eq!(rec.entities[0].name.as_deref(), Some("Acme Holdings, Inc."));
    // For a connection Perch does not hold, it is acknowledged and nothing else.
    let other = json!({"connection_id": "not-ours", "company_id": "x", "account_id": "x",
                       "event_type": "company.updated", "data": null});
    assert_eq!(deliver(&f, &other).await.unwrap().status, Handled::Ignored);
}

// --- one connection per employer and provider ---------------------------------------------

#[tokio::test]
async fn the_same_employer_connected_again_keeps_the_first_connection() {
    let f = Fast::start().await;
    let first = connect_as(&f, "acme", false, "gusto", "good_user", None).await.connection;
    let again = connect_as(&f, "acme", true, "gusto", "good_user", None).await;
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(again.connection.connection_id, first.connection_id, "the existing id");
    // The redundant connection is disconnected at Finch: it would be billed.
    assert_eq!(f.finch_calls("POST", "/disconnect"), 1);
    assert_eq!(live_at_finch(&f), 1);
    assert!(!emulated(&f, &first.connection_id).disconnected);
    let page = perch::flows::session::list_connections(&f.app, &Fast::customer("acme"), None, None).await.unwrap();
    assert_eq!(page.items.len(), 1, "never both");
    assert_eq!(f.mem.store.connections().len(), 1, "nothing of the redundant one was stored");
    // Another provider, or other entities of the same company, are other connections.
    let adp = connect_as(&f, "acme", true, "adp_run", "good_user", None).await;
    assert_eq!(adp.outcome, Outcome::Created);
    let west = connect_as(&f, "acme", true, "gusto", "good_user", Some(&[2])).await;
    assert_eq!(west.outcome, Outcome::Created);
    // So is the same employer under another customer of Perch.
    let globex = connect_as(&f, "globex", false, "gusto", "good_user", None).await;
    assert_eq!(globex.outcome, Outcome::Created);
}

#[tokio::test]
async fn two_callbacks_for_the_same_employer_at_once_end_with_one_connection() {
    use perch::store::ClaimFinchCustomer;
    let f = Fast::start().await;
    let acme = Fast::customer("acme");
    let second = perch::domain::FinchCustomerId::for_slot(&acme, 2);
    assert!(f.mem.store.claim_finch_customer(&second, &acme, 2).await.unwrap());
    let state = |url: &str| perch_tests::query(url, "state").expect("state");
    let a = f.session("acme", json!({"products": ["company"]})).await.unwrap();
    let b = f.session("acme", json!({"products": ["company"]})).await.unwrap();
    let made = |fcid: &str| {
        perch_tests::finch_made(&f.finch.shared, f.config.redirect_uri.as_str(), "acme", fcid, "good_user")
    };
    let (code_a, code_b) = (made("acme"), made(second.as_str()));
    let (state_a, state_b) = (state(&a.connect_url), state(&b.connect_url));
    let (ra, rb) =
        tokio::join!(f.redirect_callback(&code_a, Some(&state_a)), f.redirect_callback(&code_b, Some(&state_b)));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut outcomes = [ra.outcome, rb.outcome];
    outcomes.sort_by_key(|o| o.as_str());
    assert_eq!(outcomes, [Outcome::Created, Outcome::Duplicate]);
    assert_eq!(ra.connection.connection_id, rb.connection.connection_id);
    assert_eq!(live_at_finch(&f), 1, "the redundant one is disconnected at Finch");
    assert_eq!(f.mem.store.connections().len(), 1);
}

#[tokio::test]
async fn once_the_first_connection_is_gone_the_employer_connects_anew() {
    let f = Fast::start().await;
    let first = connect_as(&f, "acme", false, "gusto", "good_user", None).await.connection.connection_id;
    lifecycle::disconnect(&f.app, &Fast::customer("acme"), first.as_str()).await.unwrap();
    let again = connect_as(&f, "acme", true, "gusto", "good_user", None).await;
    assert_eq!(again.outcome, Outcome::Created);
    assert_ne!(again.connection.connection_id, first);
    // A claim left behind by a holder revoked at Finch is taken over too.
    let second = again.connection.connection_id;
    let mut rec = stored(&f, &second).await;
    rec.status = ConnectionStatus::Disconnected.into();
    f.mem.store.put_connection(rec);
    let third = connect_as(&f, "acme", true, "gusto", "good_user", None).await;
    assert_eq!(third.outcome, Outcome::Created);
    let key = stored(&f, &third.connection.connection_id).await.employer_key.expect("a key");
    assert_eq!(f.mem.store.employer_claim(&key), Some(third.connection.connection_id));
}

// --- multi-entity -------------------------------------------------------------------------

#[tokio::test]
async fn an_employer_picks_several_entities_for_one_connection() {
    let f = Fast::start().await;
    let o = connect_as(&f, "acme", false, "gusto", "good_user", Some(&[0, 2])).await;
    let names: Vec<_> = o.connection.entities.iter().map(|e| e.name.clone().unwrap_or_default()).collect();
    assert_eq!(names, ["acme, Inc.", "acme West"]);
    assert_eq!(o.connection.entity_ids.len(), 2);
    assert_eq!(f.finch.shared.world().tokens.len(), 1, "one connection, one token");
}

#[tokio::test]
async fn an_entity_webhook_changes_that_entity_only() {
    let f = Fast::start().await;
    let o = connect_as(&f, "acme", false, "gusto", "good_user", Some(&[0, 1])).await;
    let id = o.connection.connection_id.clone();
    let east = o.connection.entities[1].entity_id.clone();
    let body = json!({"connection_id": id.as_str(), "company_id": "x", "account_id": "x", "entity_id": east.as_str(),
                      "event_type": "account.updated", "data": {"status": "reauth"}});
    assert_eq!(deliver(&f, &body).await.unwrap().status, Handled::Applied);
    let rec = stored(&f, &id).await;
    assert_eq!(rec.status, ConnectionState::Finch(ConnectionStatus::Connected), "the connection is unchanged");
    let statuses: Vec<_> = rec.summary().entities.iter().map(|e| e.status.as_str().to_owned()).collect();
    assert_eq!(statuses, ["connected", "reauth"]);
    let event = f.mem.events.events().last().cloned().unwrap();
    assert_eq!((event["entity_id"].as_str(), event["status"].as_str()), (Some(east.as_str()), Some("reauth")));
    assert_eq!(event["previous_status"], "connected");
    // An entity the connection does not list: a clear answer, and the sweep looks again.
    let unknown = json!({"connection_id": id.as_str(), "company_id": "x", "account_id": "x", "entity_id": "not-an-entity",
                         "event_type": "account.updated", "data": {"status": "connected"}});
    assert_eq!(deliver(&f, &unknown).await.unwrap().status, Handled::UnknownEntity);
    assert!(stored(&f, &id).await.refresh_requested_at.is_some());
}

#[tokio::test]
async fn one_entity_is_disconnected_at_finch_and_the_last_disconnects_the_connection() {
    let f = Fast::start().await;
    let acme = Fast::customer("acme");
    let o = connect_as(&f, "acme", false, "gusto", "good_user", Some(&[0, 1, 2])).await;
    let id = o.connection.connection_id.clone();
    let ids: Vec<String> = o.connection.entities.iter().map(|e| e.entity_id.to_string()).collect();
    let d = lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), &ids[0]).await.unwrap();
    assert_eq!(d, Disconnected::Now);
    assert_eq!(f.finch_calls("POST", "/disconnect-entity"), 1);
    assert_eq!(emulated(&f, &id).entities[0].status, "disconnected");
    let rec = stored(&f, &id).await;
    assert_eq!(rec.summary().entity_ids.iter().map(|e| e.to_string()).collect::<Vec<_>>(), ids[1..]);
    assert!(rec.token.is_some(), "the token stays for the others");
    let event = f.mem.events.events().last().cloned().unwrap();
    assert_eq!((event["entity_id"].as_str(), event["status"].as_str()), (Some(ids[0].as_str()), Some("disconnected")));
    // Again: done already, Finch not called again.
    assert_eq!(lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), &ids[0]).await.unwrap(), Disconnected::Already);
    assert_eq!(f.finch_calls("POST", "/disconnect-entity"), 1);
    // An entity it does not list, another customer's connection: 404.
    let e = lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), "not-an-entity").await.unwrap_err();
    assert!(matches!(e, Error::NotFound("entity")), "{e:?}");
    let e = lifecycle::disconnect_entity(&f.app, &Fast::customer("globex"), id.as_str(), &ids[1]).await.unwrap_err();
    assert!(matches!(e, Error::NotFound("connection")), "{e:?}");
    // The claim follows the entities it still covers: those two again are a duplicate.
    let again = connect_as(&f, "acme", true, "gusto", "good_user", Some(&[1, 2])).await;
    assert_eq!((again.outcome, again.connection.connection_id.clone()), (Outcome::Duplicate, id.clone()));
    lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), &ids[1]).await.unwrap();
    // The last one is a full disconnect: Finch's /disconnect, the token destroyed.
    let before = f.finch_calls("POST", "/disconnect");
    assert_eq!(lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), &ids[2]).await.unwrap(), Disconnected::Now);
    assert_eq!(f.finch_calls("POST", "/disconnect"), before + 1);
    assert_eq!(f.finch_calls("POST", "/disconnect-entity"), 2);
    let rec = stored(&f, &id).await;
    assert!(rec.disconnected_at.is_some() && rec.token.is_none());
    assert_eq!(lifecycle::disconnect_entity(&f.app, &acme, id.as_str(), &ids[2]).await.unwrap(), Disconnected::Already);
}

#[tokio::test]
async fn an_entity_finch_no_longer_knows_is_disconnected_all_the_same() {
    let f = Fast::start().await;
    let o = connect_as(&f, "acme", false, "gusto", "good_user", Some(&[0, 1])).await;
    let id = o.connection.connection_id.clone();
    let east = o.connection.entities[1].entity_id.to_string();
    // Finch drops the entity on its side: /disconnect-entity answers 400 NOT_FOUND.
    f.finch.shared.world().connections.get_mut(id.as_str()).unwrap().entities.truncate(1);
    let d = lifecycle::disconnect_entity(&f.app, &Fast::customer("acme"), id.as_str(), &east).await.unwrap();
    assert_eq!(d, Disconnected::Now);
    assert_eq!(stored(&f, &id).await.live_entities().count(), 1);
    // A Finch failure changes nothing and is the caller's to retry.
    let o2 = connect_as(&f, "acme", true, "gusto", "good_user", Some(&[1, 2])).await;
    f.inject(json!({"path": "/disconnect-entity", "status": 500, "times": 10}));
    let e = lifecycle::disconnect_entity(
        &f.app,
        &Fast::customer("acme"),
        o2.connection.connection_id.as_str(),
        &o2.connection.entities[0].entity_id.to_string(),
    )
    .await;
    assert!(e.is_err());
    assert_eq!(stored(&f, &o2.connection.connection_id).await.live_entities().count(), 2, "nothing half-written");
}
