//! The in-process layer (see `perch_tests::fast`): every branch of the callback, of
//! disconnect, of the webhook and of the sweep's decisions, on the memory adapters against
//! the Finch emulator in this process. Milliseconds each; the stack tests prove the real path.

use perch::crypto::TokenCipher;
use std::time::Duration;

use perch::domain::{CodeHash, ConnectionId, ConnectionState, ConnectionStatus, Error, FlowMode};
use perch::flows::callback::Outcome;
use perch::flows::lifecycle::{self, Disconnected};
use perch::flows::sweep::{self, Pacer, SegmentWork};
use perch::flows::webhook::{self, Handled};
use perch::store::{CodeExchanges, DisconnectSteps, ReadConnection};
use perch_tests::fast::Fast;
use perch_tests::sweep_settings;
use secrecy::ExposeSecret;
use serde_json::json;
use time::OffsetDateTime;

fn code_of(e: &Error) -> &'static str {
    match e {
        Error::Invalid { code, .. } | Error::Conflict { code, .. } => code,
        Error::NotFound(_) => "not_found",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::Finch(_) => "finch",
        Error::FinchTransport { .. } => "finch_transport",
        Error::Aws { .. } => "aws",
        Error::PayloadTooLarge { .. } => "payload_too_large",
        Error::Configuration(_) => "configuration_error",
        Error::TokenUnreadable(_) => "token_unreadable",
        Error::Internal(..) => "internal",
    }
}

async fn stored(f: &Fast, id: &ConnectionId) -> perch::store::ConnectionRecord {
    f.mem.store.get_connection(id).await.unwrap().expect("stored")
}

// --- the callback ------------------------------------------------------------------------

#[tokio::test]
async fn a_redirect_flow_stores_an_encrypted_token_and_announces_the_connection() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    let o = f.redirect_callback(&code, Some(&state)).await.unwrap();
    assert_eq!(o.outcome, Outcome::Created);
    assert_eq!(o.connection.status, ConnectionStatus::Connected);
    let rec = stored(&f, &o.connection.connection_id).await;
    assert_eq!(rec.customer.as_str(), "acme");
    assert_eq!(rec.version, 1);
    assert!(rec.last_finch_request_id.is_some(), "the introspection's Finch-Request-Id is kept");
    let token = f.app.cipher.decrypt(rec.token.as_ref().unwrap(), &rec.connection_id, &rec.customer).await.unwrap();
    assert!(f.finch.shared.world().tokens.contains_key(token.expose_secret()));
    assert_eq!(f.events(), vec![("connect".into(), json!(null), "connected".into())]);
}

#[tokio::test]
async fn a_replayed_code_answers_the_stored_connection_without_a_second_exchange() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    let first = f.redirect_callback(&code, Some(&state)).await.unwrap();
    // The same customer replays the code with another state of its own.
    let mine = f.embedded_state("acme").await;
    let again = f.callback_on(&f.app, &code, Some(&mine), FlowMode::Embedded, Some("acme")).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyConnected);
    assert_eq!(again.connection.connection_id, first.connection.connection_id);
    assert_eq!(f.finch_calls("POST", "/auth/token"), 1);
    // Another customer replaying it, with its own state, learns nothing.
    let theirs = f.embedded_state("globex").await;
    let e = f.callback_on(&f.app, &code, Some(&theirs), FlowMode::Embedded, Some("globex")).await.unwrap_err();
    assert_eq!(code_of(&e), "code_invalid");
    assert_eq!(f.finch_calls("POST", "/auth/token"), 1);
}

#[tokio::test]
async fn a_code_being_exchanged_elsewhere_is_a_conflict() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    let hash: CodeHash = f.code_hash(&code).await;
    f.mem.store.begin_exchange(&hash, &Fast::customer("acme"), OffsetDateTime::now_utc()).await.unwrap();
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "exchange_in_progress");
    assert_eq!(f.finch_calls("POST", "/auth/token"), 0);
}

#[tokio::test]
async fn a_redirect_without_a_state_is_refused_before_any_secret_or_store_is_touched() {
    let f = Fast::start().await;
    let e = f.redirect_callback("some-code", None).await.unwrap_err();
    assert_eq!(code_of(&e), "state_invalid");
    assert_eq!(f.mem.secret.fetches(), 0);
    // So does the embedded flow, even for a signed-in caller: without one, anyone signed in
    // could make Perch spend its client credentials on guessed codes.
    for caller in [None, Some("acme")] {
        let e = f.callback_on(&f.app, "some-code", None, FlowMode::Embedded, caller).await.unwrap_err();
        assert_eq!(code_of(&e), "state_invalid");
    }
    assert_eq!((f.mem.secret.fetches(), f.finch_calls("POST", "/auth/token")), (0, 0));
}

#[tokio::test]
async fn forged_expired_foreign_and_cross_flow_states_are_refused_without_an_exchange() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    // Forged: a state Perch never signed.
    let forged = format!("{}.{}", &state[..22], "A".repeat(22));
    assert_eq!(code_of(&f.redirect_callback(&code, Some(&forged)).await.unwrap_err()), "state_invalid");
    // The right state in the wrong flow: refused, and not burnt (the flow type is part of the
    // consuming condition), so its own flow still completes — once.
    let e = f.callback_on(&f.app, &code, Some(&state), FlowMode::Embedded, Some("acme")).await.unwrap_err();
    assert_eq!(code_of(&e), "state_invalid");
    assert_eq!(f.finch_calls("POST", "/auth/token"), 0);
    assert_eq!(f.redirect_callback(&code, Some(&state)).await.unwrap().outcome, Outcome::Created);
    assert_eq!(code_of(&f.redirect_callback(&code, Some(&state)).await.unwrap_err()), "state_invalid", "single use");

    // Another customer's state, in the embedded flow: refused and left for its owner.
    let s = f.session("acme", json!({"products": ["company"], "flow": "embedded"})).await.unwrap();
    let st = s.state.clone().unwrap();
    let e = f.callback_on(&f.app, &code, Some(&st), FlowMode::Embedded, Some("globex")).await.unwrap_err();
    assert_eq!(code_of(&e), "state_invalid");
    let secrets = f.app.secrets.get().await.unwrap();
    let verified = perch::crypto::state::verify(secrets.state_key.expose_secret(), &st).unwrap();
    assert!(f.mem.store.has_state(verified.id()), "a foreign caller does not consume the state");

    // Expired: the stored flow outlived its Finch session (30 days by default).
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    f.app.clock.advance(time::Duration::days(30) + time::Duration::seconds(1));
    assert_eq!(code_of(&f.redirect_callback(&code, Some(&state)).await.unwrap_err()), "state_invalid");
    assert_eq!(f.finch_calls("POST", "/auth/token"), 0);
}

#[tokio::test]
async fn a_code_finch_refuses_is_the_callers_400_and_a_401_drops_the_cached_secret() {
    let f = Fast::start().await;
    let (_, state) = f.code_for("acme").await;
    let e = f.redirect_callback("not-a-code-finch-issued", Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "code_invalid");
    assert_eq!(f.mem.store.connections().len(), 0);

    let (code, state) = f.code_for("acme").await;
    let fetches = f.mem.secret.fetches();
    f.inject(json!({"path": "/auth/token", "status": 401, "times": 1}));
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "configuration_error", "Finch refusing Perch's client is no user error");
    f.app.secrets.get().await.unwrap();
    assert_eq!(f.mem.secret.fetches(), fetches + 1, "the secret is read again after a 401");
}

#[tokio::test]
async fn an_exchange_that_never_left_frees_the_code_and_one_that_may_have_keeps_it() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    // Nothing listens there: the request provably never reached Finch.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let offline = f.with_finch_at(&format!("http://{dead}"));
    let e = f.callback_on(&offline, &code, Some(&state), FlowMode::Redirect, None).await.unwrap_err();
    assert!(matches!(e, Error::FinchTransport { maybe_sent: false, .. }), "{e:?}");
    // The code is free again: with a fresh state of the same customer, it completes.
    let (_, fresh_state) = f.code_for("acme").await;
    let o = f.redirect_callback(&code, Some(&fresh_state)).await.unwrap();
    assert_eq!(o.outcome, Outcome::Created);

    // A timeout may have reached Finch: the code stays marked, a retry is a conflict.
    let f = Fast::start_with(&[("FINCH_TIMEOUT_MS", "200")]).await;
    let (code, state) = f.code_for("acme").await;
    f.inject(json!({"path": "/auth/token", "latency_ms": 1000, "times": 1}));
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert!(matches!(e, Error::FinchTransport { timed_out: true, .. }), "{e:?}");
    let (_, retry_state) = f.code_for("acme").await;
    let e = f.redirect_callback(&code, Some(&retry_state)).await.unwrap_err();
    assert_eq!(code_of(&e), "exchange_in_progress");
}

#[tokio::test]
async fn introspection_and_company_failures_store_a_pending_connection_all_the_same() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    f.inject(json!({"path": "/introspect", "status": 500, "times": 10}));
    f.inject(json!({"path": "/employer/company", "status": 500, "times": 10}));
    let o = f.redirect_callback(&code, Some(&state)).await.unwrap();
    assert_eq!(o.connection.status, ConnectionStatus::Pending);
    let rec = stored(&f, &o.connection.connection_id).await;
    assert!(rec.status_observed_at.is_none(), "nothing was observed");
    assert!(rec.last_finch_request_id.is_some(), "the exchange's Finch-Request-Id instead");
    assert!(rec.employer.customer_name.is_some(), "the customer name Finch gave with the token");
    assert!(rec.employer.legal_name.is_none(), "the company did not answer");
    assert!(rec.summary().company_name.is_some(), "the customer name stands in");
}

#[tokio::test]
async fn a_code_sent_with_another_customers_state_is_refused_but_kept_for_its_owner() {
    let f = Fast::start().await;
    let (code, acme_state) = f.code_for("acme").await;
    // acme's code comes back with a state of globex's (a callback URL pieced together).
    let (_, theirs) = f.code_for("globex").await;
    let e = f.redirect_callback(&code, Some(&theirs)).await.unwrap_err();
    assert_eq!(code_of(&e), "code_invalid");
    // The connection Finch made is acme's, and stored for acme: nothing orphaned at Finch.
    let held = f.mem.store.connections();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].customer.as_str(), "acme");
    assert_eq!(f.finch_calls("POST", "/disconnect"), 0);
    // acme's own callback then finds it, without a second exchange.
    let o = f.redirect_callback(&code, Some(&acme_state)).await.unwrap();
    assert_eq!((o.outcome, &o.connection.connection_id), (Outcome::AlreadyConnected, &held[0].connection_id));
    assert_eq!(f.finch_calls("POST", "/auth/token"), 1);
}

#[tokio::test]
async fn a_connection_no_customer_claimed_is_revoked_at_finch() {
    let f = Fast::start().await;
    let (code, _) = f.code_for("acme").await;
    // Finch files the connection under a customer id nobody in Perch claimed.
    let connection_id = f.finch.shared.world().codes[&code].connection_id.clone();
    f.finch.shared.world().connections.get_mut(&connection_id).unwrap().customer_id =
        Some("nobody-claimed-this".into());
    let (_, state) = f.code_for("globex").await;
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "code_invalid");
    assert!(f.mem.store.connections().is_empty());
    assert!(f.finch.shared.world().connections[&connection_id].disconnected, "revoked, not billed");
    assert!(!f.mem.store.has_code_marker(&f.code_hash(&code).await), "no stuck mark");
}

#[tokio::test]
async fn reconnecting_replaces_the_token_at_the_next_version() {
    let f = Fast::start().await;
    let first = f.connect("acme").await;
    let id = first.connection.connection_id.clone();
    // The employer must log in again, and the sweep has seen it.
    f.finch.shared.world().connections.get_mut(id.as_str()).unwrap().status = "reauth".into();
    sweep::run_round(&f.app, &sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]), far()).await.unwrap();
    let before = stored(&f, &id).await;
    assert_eq!(before.status, ConnectionStatus::Reauth);
    let s = lifecycle::reauthenticate(&f.app, &Fast::customer("acme"), id.as_str(), &Default::default()).await.unwrap();
    assert_eq!(s.reauthenticates.as_ref(), Some(&id));
    let (code, state) = f.login(&s.connect_url).await;
    let o = f.redirect_callback(&code, state.as_deref()).await.unwrap();
    assert_eq!(o.outcome, Outcome::Reauthenticated);
    let after = stored(&f, &id).await;
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.created_at, before.created_at);
    assert_ne!(after.token, before.token);
    assert_eq!(f.events().last().cloned(), Some(("reauthenticate".into(), json!("reauth"), "connected".into())));
}

#[tokio::test]
async fn a_busy_store_is_ridden_out_and_a_long_outage_is_reported() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    f.mem.store.fail_next("save_connection", 1);
    let o = f.redirect_callback(&code, Some(&state)).await.unwrap();
    assert_eq!(o.outcome, Outcome::Created);

    let (code, state) = f.code_for("globex").await;
    f.mem.store.fail_next("save_connection", 3);
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert!(matches!(e, Error::Aws { retryable: true, .. }), "{e:?}");
    assert!(perch_tests::captured_logs().contains("token exchanged but not stored"));
}

#[tokio::test]
async fn a_disconnected_connection_is_not_brought_back_by_a_late_callback() {
    let f = Fast::start().await;
    let o = f.connect("acme").await;
    let id = o.connection.connection_id.clone();
    let s = lifecycle::reauthenticate(&f.app, &Fast::customer("acme"), id.as_str(), &Default::default()).await.unwrap();
    let (code, state) = f.login(&s.connect_url).await;
    lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap();
    let e = f.redirect_callback(&code, state.as_deref()).await.unwrap_err();
    // Finch revoked the connection's tokens at disconnect; a code for it no longer exchanges,
    // and nothing is written either way.
    assert!(matches!(code_of(&e), "code_invalid" | "connection_disconnected"), "{e:?}");
    assert!(stored(&f, &id).await.token.is_none());
}

#[tokio::test]
async fn a_connection_being_disconnected_is_not_overwritten_by_a_callback() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let s = lifecycle::reauthenticate(&f.app, &Fast::customer("acme"), id.as_str(), &Default::default()).await.unwrap();
    let (code, state) = f.login(&s.connect_url).await;
    // A disconnect starts (and has not reached Finch yet) while the employer logs in.
    let rec = stored(&f, &id).await;
    let lease = OffsetDateTime::now_utc() + time::Duration::seconds(30);
    assert!(f.mem.store.mark_disconnecting(&id, rec.version, lease).await.unwrap());
    let e = f.redirect_callback(&code, state.as_deref()).await.unwrap_err();
    assert_eq!(code_of(&e), "connection_disconnected");
    assert_eq!(stored(&f, &id).await.token, rec.token, "the token the disconnect will revoke is kept");
}

#[tokio::test]
async fn a_connection_another_customer_holds_is_never_taken_over() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    // Perch already holds the connection Finch will name, for globex.
    let connection_id = f.finch.shared.world().codes[&code].connection_id.clone();
    let theirs = f.connect("globex").await.connection.connection_id;
    let mut rec = stored(&f, &theirs).await;
    rec.connection_id = ConnectionId::parse(connection_id.clone()).unwrap();
    f.mem.store.put_connection(rec.clone());
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "code_invalid");
    let after = stored(&f, &rec.connection_id).await;
    assert_eq!((after.customer.as_str(), after.version), ("globex", rec.version));
}

// --- disconnect --------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_revokes_at_finch_destroys_the_token_and_is_idempotent() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let acme = Fast::customer("acme");
    assert_eq!(lifecycle::disconnect(&f.app, &acme, id.as_str()).await.unwrap(), Disconnected::Now);
    let rec = stored(&f, &id).await;
    assert!(rec.token.is_none() && rec.disconnected_at.is_some());
    assert_eq!(rec.status, ConnectionStatus::Disconnected);
    assert_eq!(f.finch_calls("POST", "/disconnect"), 1);
    assert_eq!(f.events().last().cloned(), Some(("disconnect".into(), json!("connected"), "disconnected".into())));
    assert_eq!(lifecycle::disconnect(&f.app, &acme, id.as_str()).await.unwrap(), Disconnected::Already);
    assert_eq!(f.finch_calls("POST", "/disconnect"), 1, "once gone, Finch is not called again");
}

#[tokio::test]
async fn disconnect_answers_404_for_foreign_unknown_and_malformed_ids() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    for (customer, raw) in [("globex", id.as_str()), ("acme", "c-unknown"), ("acme", "bad id#1")] {
        let e = lifecycle::disconnect(&f.app, &Fast::customer(customer), raw).await.unwrap_err();
        assert_eq!(code_of(&e), "not_found", "{customer} {raw}");
    }
    assert!(stored(&f, &id).await.token.is_some(), "untouched");
}

#[tokio::test]
async fn a_token_finch_already_revoked_still_completes_the_disconnect() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    f.inject(json!({"path": "/disconnect", "status": 401, "times": 1}));
    let d = lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap();
    assert_eq!(d, Disconnected::Now);
}

#[tokio::test]
async fn a_failed_finch_disconnect_stays_disconnecting_until_a_retry_finishes_it() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    f.inject(json!({"path": "/disconnect", "status": 500, "times": 10}));
    let e = lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap_err();
    assert!(matches!(&e, Error::Finch(x) if x.status == 500), "{e:?}");
    let rec = stored(&f, &id).await;
    assert_eq!(rec.status, ConnectionState::Disconnecting);
    assert!(rec.token.is_some(), "the token is kept until Finch confirms");
    // Disconnecting: a re-authentication and the listing's reauth are refused.
    let e =
        lifecycle::reauthenticate(&f.app, &Fast::customer("acme"), id.as_str(), &Default::default()).await.unwrap_err();
    assert_eq!(code_of(&e), "connection_disconnecting");
    f.finch.shared.world().faults.clear();
    let d = lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap();
    assert_eq!(d, Disconnected::Now);
    // The event's previous status is Finch's, not Perch's own `disconnecting`.
    assert_eq!(f.events().last().map(|e| e.1.clone()), Some(json!(null)));
}

// --- the webhook -------------------------------------------------------------------------

async fn deliver(f: &Fast, body: &serde_json::Value, at: i64) -> Result<webhook::Outcome, Error> {
    let (id, ts, sig, raw) = f.webhook(body, at);
    webhook::handle(&f.app, Some(&id), Some(&ts), Some(&sig), &raw).await
}

fn account_updated(connection_id: &str, status: &str) -> serde_json::Value {
    json!({"connection_id": connection_id, "company_id": "co-1", "account_id": "ac-1",
           "event_type": "account.updated", "data": {"status": status, "authentication_method": "credential"}})
}

#[tokio::test]
async fn account_updated_is_applied_once_and_announced() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let now = OffsetDateTime::now_utc().unix_timestamp() + 1;
    let body = account_updated(id.as_str(), "reauth");
    let (eid, ts, sig, raw) = f.webhook(&body, now);
    let o = webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap();
    assert_eq!(o.status, Handled::Applied);
    assert_eq!(stored(&f, &id).await.status, ConnectionStatus::Reauth);
    assert_eq!(f.events().last().cloned(), Some(("webhook".into(), json!("connected"), "reauth".into())));
    let again = webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap();
    assert_eq!(again.status, Handled::Duplicate);
}

#[tokio::test]
async fn older_unknown_and_irrelevant_events_change_nothing() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let before = stored(&f, &id).await;
    let old = OffsetDateTime::now_utc().unix_timestamp() - 120;
    assert_eq!(deliver(&f, &account_updated(id.as_str(), "reauth"), old).await.unwrap().status, Handled::Stale);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(deliver(&f, &account_updated("c-nobody", "reauth"), now).await.unwrap().status, Handled::Stale);
    let other = json!({"connection_id": id.as_str(), "event_type": "job.benefit_create.completed", "data": {}});
    assert_eq!(deliver(&f, &other, now).await.unwrap().status, Handled::Ignored);
    let legacy = json!({"company_id": "co-1", "event_type": "account.updated", "data": {"status": "reauth"}});
    assert_eq!(deliver(&f, &legacy, now).await.unwrap().status, Handled::Ignored);
    assert_eq!(stored(&f, &id).await.version, before.version);
    // An entity the connection does not list changes no status; the sweep reads the entities.
    let mut entity = account_updated(id.as_str(), "disconnected");
    entity["entity_id"] = json!("ent-2");
    assert_eq!(deliver(&f, &entity, now).await.unwrap().status, Handled::UnknownEntity);
    let after = stored(&f, &id).await;
    assert_eq!((after.status, after.entities), (before.status, before.entities));
    assert!(after.refresh_requested_at.is_some());
}

#[tokio::test]
async fn bad_signatures_and_bodies_leave_no_trace_for_finchs_retry() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (eid, ts, _, raw) = f.webhook(&account_updated(id.as_str(), "reauth"), now);
    let e = webhook::handle(&f.app, Some(&eid), Some(&ts), Some("v1,AAAA"), &raw).await.unwrap_err();
    assert_eq!(code_of(&e), "unauthenticated");
    let (eid2, ts2, sig2, raw2) = f.webhook(&json!({"event_type": "account.updated", "data": {}}), now);
    let e = webhook::handle(&f.app, Some(&eid2), Some(&ts2), Some(&sig2), &raw2).await.unwrap_err();
    assert_eq!(code_of(&e), "invalid_body");
    // Neither was recorded: the same id, delivered properly, is handled as new.
    let text = String::from_utf8(raw.clone()).unwrap();
    let sig = finch_emulator::webhooks::sign(&f.webhook_secret, &eid, now, &text).unwrap();
    assert_eq!(
        webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap().status,
        Handled::Applied
    );
}

#[tokio::test]
async fn a_failure_to_apply_forgets_the_event_so_the_redelivery_applies_it() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let now = OffsetDateTime::now_utc().unix_timestamp() + 1;
    let (eid, ts, sig, raw) = f.webhook(&account_updated(id.as_str(), "reauth"), now);
    f.mem.store.fail_next("apply_pushed_status", 1);
    let e = webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap_err();
    assert!(matches!(e, Error::Aws { .. }));
    let o = webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap();
    assert_eq!(o.status, Handled::Applied);
}

#[tokio::test]
async fn without_a_webhook_secret_deliveries_are_a_500_and_nothing_is_recorded() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let now = OffsetDateTime::now_utc().unix_timestamp() + 1;
    let (eid, ts, sig, raw) = f.webhook(&account_updated(id.as_str(), "reauth"), now);
    let emu = finch_emulator::EmulatorConfig::default();
    f.mem.secret.set(
        perch::memory::sample_secret(&emu.client_id, &emu.client_secret).unwrap().replace("webhook_secret", "unused"),
    );
    f.app.secrets.invalidate().await;
    let e = webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &raw).await.unwrap_err();
    assert_eq!(code_of(&e), "internal");
    assert_eq!(stored(&f, &id).await.status, ConnectionStatus::Connected);
}

// --- the sweep's decisions ---------------------------------------------------------------

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn the_sweep_records_what_finch_says_and_announces_only_changes() {
    let f = Fast::start().await;
    let a = f.connect("acme").await.connection.connection_id;
    let b = f.connect("globex").await.connection.connection_id;
    f.finch.shared.world().connections.get_mut(a.as_str()).unwrap().status = "reauth".into();
    let s = sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]);
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!((r.checked, r.changed, r.failed), (2, 1, 0));
    assert_eq!(stored(&f, &a).await.status, ConnectionStatus::Reauth);
    let rb = stored(&f, &b).await;
    assert!(rb.checked_at.is_some());
    let sweeps: Vec<_> = f.events().into_iter().filter(|e| e.0 == "status_check").collect();
    assert_eq!(sweeps, vec![("status_check".into(), json!("connected"), "reauth".into())]);
    // Checked this round: the next round's scan skips both.
    let s = sweep_settings(&[]);
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!(r.checked, 0);
}

#[tokio::test]
async fn a_401_is_reauth_or_a_revocation_and_retryable_failures_are_retried() {
    let f = Fast::start().await;
    let a = f.connect("acme").await.connection.connection_id;
    let s = sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]);
    // Revoked outside Perch: any other 401.
    f.finch.shared.world().tokens.values_mut().for_each(|t| t.revoked = true);
    sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!(stored(&f, &a).await.status, ConnectionStatus::Disconnected);

    let f = Fast::start().await;
    let a = f.connect("acme").await.connection.connection_id;
    f.inject(json!({"path": "/introspect", "status": 429, "retry_after": 0, "times": 2}));
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!((r.checked, r.failed, r.rate_limited), (1, 0, 2));
    assert_eq!(r.finch_requests, 3);

    f.inject(json!({"path": "/introspect", "status": 400, "times": 1}));
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!((r.checked, r.failed), (0, 1), "a refusal is not retried");
    assert_eq!(stored(&f, &a).await.status, ConnectionStatus::Connected);
}

#[tokio::test]
async fn a_check_that_cannot_be_recorded_fails_alone_and_a_scan_failure_fails_the_segment() {
    let f = Fast::start().await;
    f.connect("acme").await;
    let s = sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0"), ("SWEEP_SEGMENTS", "1")]);
    f.mem.store.fail_next("record_check", 1);
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!((r.checked, r.failed), (0, 1));
    f.mem.store.fail_next("scan_due", 1);
    let e = sweep::run_round(&f.app, &s, far()).await.unwrap_err();
    assert!(matches!(e, Error::Aws { .. }));
}

#[tokio::test]
async fn disconnecting_and_disconnected_connections_are_not_checked() {
    let f = Fast::start().await;
    let a = f.connect("acme").await.connection.connection_id;
    let b = f.connect("globex").await.connection.connection_id;
    lifecycle::disconnect(&f.app, &Fast::customer("acme"), a.as_str()).await.unwrap();
    f.inject(json!({"path": "/disconnect", "status": 500, "times": 10}));
    let e = lifecycle::disconnect(&f.app, &Fast::customer("globex"), b.as_str()).await.unwrap_err();
    assert!(matches!(&e, Error::Finch(x) if x.status == 500), "{e:?}");
    let s = sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]);
    let r = sweep::run_round(&f.app, &s, far()).await.unwrap();
    assert_eq!(r.checked + r.failed + r.superseded, 0);
    assert_eq!(f.finch_calls("GET", "/introspect"), 2, "only the two callbacks' introspections");
}

#[tokio::test]
async fn near_the_deadline_the_segment_hands_back_where_it_stands() {
    let f = Fast::start().await;
    f.connect("acme").await;
    f.connect("globex").await;
    let s =
        sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0"), ("SWEEP_SEGMENTS", "1"), ("SWEEP_TIME_MARGIN_SECONDS", "30")]);
    let work = SegmentWork { segment: 0, total: 1, start: None, round_started: OffsetDateTime::now_utc() };
    // 10 s left, 30 s margin: nothing starts, the whole segment is handed back.
    let soon = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = sweep::run_segment(&f.app, &s, &Pacer::new(s.slot()), work.clone(), soon).await.unwrap();
    assert_eq!(r.checked, 0);
    assert_eq!(r.next, Some(work.clone()));
    let r = sweep::run_segment(&f.app, &s, &Pacer::new(s.slot()), work, far()).await.unwrap();
    assert_eq!((r.checked, r.next), (2, None));
}

#[tokio::test]
async fn the_memory_store_pages_listings_like_dynamodb() {
    let f = Fast::start().await;
    let acme = Fast::customer("acme");
    let mut ids = Vec::new();
    for i in 0..3 {
        // Three employers (three logins): the same one thrice would be one connection.
        let s = f.session("acme", json!({"products": ["company"], "additional": true})).await.unwrap();
        let (code, state) = f.login_as(&s.connect_url, "gusto", &format!("good_user+{i}"), None).await;
        ids.push(f.redirect_callback(&code, Some(&state)).await.unwrap().connection.connection_id);
    }
    let p1 = perch::flows::session::list_connections(&f.app, &acme, Some("2"), None).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 =
        perch::flows::session::list_connections(&f.app, &acme, Some("2"), p1.next_cursor.as_deref()).await.unwrap();
    let listed: Vec<_> = p1.items.iter().chain(&p2.items).map(|c| c.connection_id.clone()).collect();
    assert_eq!(listed, ids, "oldest first, each once");
    assert!(p2.next_cursor.is_none());
    let e = perch::flows::session::list_connections(&f.app, &acme, None, Some("not-a-cursor")).await.unwrap_err();
    assert_eq!(code_of(&e), "invalid_cursor");
    let none = perch::flows::session::list_connections(&f.app, &Fast::customer("globex"), None, None).await.unwrap();
    assert!(none.items.is_empty());
}

// --- issue 14: failure paths, holes and races, branch by branch -------------------------------

#[tokio::test]
async fn a_status_pushed_for_a_connection_not_stored_yet_is_parked_and_applied_by_its_callback() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    let id = f.finch.shared.world().codes[&code].connection_id.clone();
    // The webhook arrives before the connection is stored: as if the callback had introspected
    // (Finch still said connected) and were between that and its save.
    let at = OffsetDateTime::now_utc().unix_timestamp() + 1;
    assert_eq!(deliver(&f, &account_updated(&id, "reauth"), at).await.unwrap().status, Handled::Stale);
    let o = f.redirect_callback(&code, Some(&state)).await.unwrap();
    assert_eq!((o.outcome, &o.connection.status), (Outcome::Created, &ConnectionStatus::Reauth.into()));
    let events: Vec<String> = f.events().into_iter().map(|(source, _, status)| format!("{source}:{status}")).collect();
    assert_eq!(events.last().map(String::as_str), Some("webhook:reauth"));
    // Taken: a second connect of another connection finds nothing parked for it.
    assert_eq!(f.connect("globex").await.connection.status, ConnectionStatus::Connected);
}

#[tokio::test]
async fn a_callback_keeps_a_status_observed_after_its_introspection() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let reconnect = || async {
        let acme = Fast::customer("acme");
        let s = lifecycle::reauthenticate(&f.app, &acme, id.as_str(), &Default::default()).await.unwrap();
        f.login(&s.connect_url).await
    };
    // Finch flags the connection *while* the callback runs (after its introspection).
    let (code, state) = reconnect().await;
    f.inject(json!({"path": "/employer/company", "hold": "company", "times": 1}));
    let meanwhile = async {
        f.finch.shared.holds().arrived("company").await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let handled = deliver(&f, &account_updated(id.as_str(), "reauth"), now).await.unwrap().status;
        f.finch.shared.holds().release("company");
        handled
    };
    let (o, handled) = tokio::join!(f.redirect_callback(&code, state.as_deref()), meanwhile);
    assert_eq!((o.unwrap().outcome, handled), (Outcome::Reauthenticated, Handled::Applied));
    assert_eq!(stored(&f, &id).await.status, ConnectionStatus::Reauth, "the newer observation stands");

    // Flagged just *before* the employer reconnects — in the same second as the callback's
    // introspection: the reconnection's own observation wins.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (code, state) = reconnect().await;
    assert_eq!(deliver(&f, &account_updated(id.as_str(), "reauth"), now).await.unwrap().status, Handled::Applied);
    f.redirect_callback(&code, state.as_deref()).await.unwrap();
    assert_eq!(stored(&f, &id).await.status, ConnectionStatus::Connected);
}

#[tokio::test]
async fn a_token_response_without_connection_id_is_completed_by_introspect_or_not_stored() {
    let f = Fast::start().await;
    f.finch.shared.world().token_without_connection_id = true;
    let o = f.connect("acme").await;
    assert_eq!(o.connection.status, ConnectionStatus::Connected);
    // Without the introspection there is no id to store it under: a retryable failure.
    let (code, state) = f.code_for("globex").await;
    f.inject(json!({"path": "/introspect", "status": 500, "times": 3}));
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert!(matches!(&e, Error::Finch(x) if x.status == 500), "{e:?}");
    assert_eq!(f.mem.store.connections().len(), 1);
}

#[tokio::test]
async fn a_redirect_uri_finch_refuses_is_a_configuration_error_and_frees_the_code() {
    let f = Fast::start().await;
    let (code, state) = f.code_for("acme").await;
    f.finch.shared.world().codes.get_mut(&code).unwrap().redirect_uri = Some("https://elsewhere.test/cb".into());
    let e = f.redirect_callback(&code, Some(&state)).await.unwrap_err();
    assert_eq!(code_of(&e), "configuration_error");
    assert!(!f.mem.store.has_code_marker(&f.code_hash(&code).await), "nothing was exchanged, nothing stays marked");
}

#[tokio::test]
async fn concurrent_disconnects_call_finch_once() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    f.inject(json!({"path": "/disconnect", "hold": "d", "times": 1}));
    let acme = Fast::customer("acme");
    let calls = futures_util::future::join_all((0..3).map(|_| lifecycle::disconnect(&f.app, &acme, id.as_str())));
    let release = async {
        f.finch.shared.holds().arrived("d").await;
        f.finch.shared.holds().release("d");
    };
    let (results, ()) = tokio::join!(calls, release);
    let mut outcomes: Vec<Disconnected> = results.into_iter().map(Result::unwrap).collect();
    outcomes.sort_by_key(|d| *d == Disconnected::Already);
    assert_eq!(outcomes, vec![Disconnected::Now, Disconnected::Already, Disconnected::Already]);
    assert_eq!(f.finch_calls("POST", "/disconnect"), 1);
}

#[tokio::test]
async fn a_disconnect_lease_left_by_a_holder_that_died_lapses() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let rec = stored(&f, &id).await;
    let lease = f.app.clock.now() + time::Duration::seconds(45);
    assert!(f.mem.store.mark_disconnecting(&id, rec.version, lease).await.unwrap());
    f.app.clock.advance(time::Duration::seconds(46));
    let d = lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap();
    assert_eq!(d, Disconnected::Now);
}

#[tokio::test]
async fn an_undecryptable_token_is_destroyed_without_reaching_finch() {
    let f = Fast::start().await;
    let id = f.connect("acme").await.connection.connection_id;
    let mut rec = stored(&f, &id).await;
    if let Some(t) = rec.token.as_mut() {
        let last = t.ciphertext.len() - 1;
        t.ciphertext[last] ^= 0xff;
    }
    f.mem.store.put_connection(rec);
    let d = lifecycle::disconnect(&f.app, &Fast::customer("acme"), id.as_str()).await.unwrap();
    assert_eq!(d, Disconnected::Now);
    let after = stored(&f, &id).await;
    assert!(after.token.is_none() && after.disconnected_at.is_some());
    assert_eq!(f.finch_calls("POST", "/disconnect"), 0, "there was nothing to revoke with");
}
