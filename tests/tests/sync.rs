//! Perch Sync (issue 16): reading the employer's organization data.
//!
//! So far: Perch's Finch client against the emulator over HTTP — pages, batches at the caps,
//! per-item errors, the 202 reasons kept distinct, a product not granted, and the headers that
//! say which snapshot the data is.

use std::time::Duration;

use finch_emulator::people::{Roster, seed_of};
use perch::domain::AccessToken;
use perch::domain::sync::WaitReason;
use perch::finch::{Data, FinchClient};

/// An emulator with one sandbox connection of `size` people, granted `products`; its client,
/// token, connection id and entity id.
async fn employer(size: u32, products: &[&str]) -> (finch_emulator::Running, FinchClient, AccessToken, String, String) {
    let finch =
        finch_emulator::spawn(finch_emulator::EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (id, token, entity) = {
        let mut w = finch.shared.world();
        let products = products.iter().map(|p| (*p).to_owned()).collect();
        let id = w.create_connection(
            None,
            Some("Data Co".into()),
            None,
            "gusto".into(),
            products,
            "credential".into(),
            Some("finch"),
            false,
        );
        let token = w.mint_token(&id);
        let entity = w.connections[&id].account_id();
        w.rosters.insert(entity.clone(), Roster::new(seed_of(&entity), size));
        (id, token, entity)
    };
    let client = FinchClient::new(finch.base_url.parse().unwrap(), Duration::from_secs(10), 0);
    (finch, client, AccessToken::new(token), id, entity)
}

/// Finch's own refusal inside a Perch error.
fn finch_refusal(e: &perch::Error) -> &perch::domain::FinchError {
    match e {
        perch::Error::Finch(f) => f,
        other => panic!("not Finch's refusal: {other:?}"),
    }
}

fn ready<T>(d: Data<T>) -> perch::finch::Fetched<T> {
    match d {
        Data::Ready(f) => f,
        Data::NotYet(why) => panic!("no data yet: {why:?}"),
    }
}

#[tokio::test]
async fn the_directory_pages_to_its_count_and_batches_answer_item_by_item() {
    let (finch, client, token, _, entity) = employer(250, &["company", "directory", "individual", "employment"]).await;
    let first = ready(client.directory_page(&token, &entity, 0, 100).await.unwrap());
    assert_eq!((first.value.paging.count, first.value.individuals.len()), (Some(250), 100));
    assert!(first.request_id.is_some() && first.data_retrieved.is_some(), "Finch's request id and snapshot time");
    let mut ids = Vec::new();
    let mut offset = 0;
    loop {
        let page = ready(client.directory_page(&token, &entity, offset, 100).await.unwrap()).value;
        for raw in &page.individuals {
            ids.push(serde_json::from_str::<perch::finch::types::Identified>(raw.get()).unwrap().id);
        }
        offset += page.individuals.len() as u64;
        if page.individuals.is_empty() || offset >= page.paging.count.unwrap() {
            break;
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 250);

    let mut asked = ids[..3].to_vec();
    asked.push("00000000-0000-4000-8000-000000000000".into());
    let people = ready(client.individuals(&token, &entity, &asked, false).await.unwrap()).value;
    let codes: Vec<u16> = people.responses.iter().map(|r| r.code).collect();
    assert_eq!(codes, [200, 200, 200, 404], "a missing person is a 404 item, not a failed call");
    assert!(!people.responses[0].body.get().contains("\"ssn\""), "no SSN unless asked and granted");
    let jobs = ready(client.employments(&token, &entity, &ids[..3]).await.unwrap()).value;
    assert!(jobs.responses.iter().all(|r| r.code == 200 && r.body.get().contains("\"income\"")));
    let company = ready(client.company_record(&token, &entity).await.unwrap()).value;
    assert!(company.get().contains("\"legal_name\""));

    let sent = finch.requests();
    assert!(
        sent.iter().filter(|r| r.path.starts_with("/employer/")).all(|r| r.status == 200),
        "every data request Perch sent was accepted: {sent:?}"
    );
    assert!(
        finch.violations().is_empty(),
        "Perch's requests and the emulator's answers follow Finch's spec: {:?}",
        finch.violations()
    );
}

#[tokio::test]
async fn the_reasons_for_no_data_yet_stay_distinct() {
    let (finch, client, token, id, entity) = employer(5, &["directory"]).await;
    for (code, want) in [
        ("data_sync_in_progress", WaitReason::DataSyncInProgress),
        ("pending", WaitReason::Pending),
        ("accountant_setup_pending", WaitReason::AccountantSetupPending),
    ] {
        finch.shared.world().data_phases.insert(id.clone(), (code.into(), None));
        match client.directory_page(&token, &entity, 0, 10).await.unwrap() {
            Data::NotYet(why) => assert_eq!((why.code(), &why), (code, &want)),
            Data::Ready(_) => panic!("{code}: data served"),
        }
    }
    finch.shared.world().data_phases.clear();
    assert!(matches!(client.directory_page(&token, &entity, 0, 10).await.unwrap(), Data::Ready(_)));
}

#[tokio::test]
async fn a_product_not_granted_and_a_lost_connection_are_told_apart() {
    let (finch, client, token, id, entity) = employer(5, &["directory"]).await;
    let denied = client.employments(&token, &entity, &["x".into()]).await.unwrap_err();
    let denied = finch_refusal(&denied);
    assert_eq!((denied.status, denied.name.as_deref()), (403, Some("insufficient_scope_error")));
    assert!(!denied.needs_reauth());
    finch.shared.world().connections.get_mut(&id).unwrap().status = "reauth".into();
    let lost = client.directory_page(&token, &entity, 0, 10).await.unwrap_err();
    assert!(finch_refusal(&lost).needs_reauth(), "{lost:?}");
}

#[tokio::test]
async fn more_ids_than_finch_takes_are_refused_before_sending() {
    let (finch, client, token, _, entity) = employer(5, &["individual"]).await;
    let ids: Vec<String> = (0..=perch::finch::MAX_BATCH_IDS).map(|i| format!("id-{i}")).collect();
    assert!(client.individuals(&token, &entity, &ids, false).await.is_err());
    assert!(finch.requests().is_empty(), "nothing was sent");
}

/// Both data-key adapters: a record sealed under a connection's key opens after the key is
/// unwrapped again, and a wrapped key unwraps for no other connection or customer.
async fn data_keys_are_bound_to_their_connection(keys: &dyn perch::crypto::records::DataKeys) {
    use perch::crypto::records::RecordId;
    use perch::domain::{ConnectionId, CustomerId};
    let a = ConnectionId::parse("0b6f3c9e-8f6e-4a51-9d0a-2a3f5c7e9b10").unwrap();
    let b = ConnectionId::parse("5d2c1e8a-3b4f-4c6d-8e9f-0a1b2c3d4e5f").unwrap();
    let (acme, globex) = (CustomerId::parse("acme").unwrap(), CustomerId::parse("globex").unwrap());
    let (key, wrapped) = keys.generate(&a, &acme).await.unwrap();
    assert!(wrapped.ciphertext.len() > 32, "a wrapped key, not the key");
    let record = RecordId { connection: &a, entity: "e", kind: "individual", id: "p" };
    let sealed = key.seal(record, br#"{"dob":"1990-01-01"}"#).unwrap();
    let again = keys.unwrap(&wrapped, &a, &acme).await.unwrap();
    assert_eq!(again.open(record, &sealed).unwrap(), br#"{"dob":"1990-01-01"}"#);
    assert_eq!(again.content_hash(record, b"x").unwrap(), key.content_hash(record, b"x").unwrap());
    assert!(keys.unwrap(&wrapped, &b, &acme).await.is_err(), "another connection");
    assert!(keys.unwrap(&wrapped, &a, &globex).await.is_err(), "another customer");
    let (other, _) = keys.generate(&a, &acme).await.unwrap();
    assert!(other.open(record, &sealed).is_err(), "each key its own");
}

#[tokio::test]
async fn data_keys_in_memory() {
    data_keys_are_bound_to_their_connection(&perch::memory::MemoryCipher::new("memory-key").unwrap()).await;
}

#[tokio::test]
async fn data_keys_from_kms() {
    let stack = perch_tests::TestStack::start().await;
    data_keys_are_bound_to_their_connection(stack.app.cipher.as_ref()).await;
}

/// Many invocations at once take exactly a window's limit, never one more; a request counts
/// against its product's window and the IP's or neither; Finch's 429 blocks the window.
async fn one_budget_for_everyone(store: std::sync::Arc<dyn perch::store::BudgetWindows>) {
    use perch::flows::budget::{Budget, Priority, Taken, Window};
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let product = Window { reserve: 0, ..Window::product("directory") };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, product) = (store.clone(), product.clone());
        tasks.push(tokio::spawn(async move {
            let budget = Budget::new(store.as_ref());
            let mut got = 0;
            loop {
                match budget.try_take(std::slice::from_ref(&product), Priority::First, now).await.unwrap() {
                    Taken::Yes => got += 1,
                    // Busy (a lost race): ask again; full: done.
                    Taken::WaitUntil(t) if t <= now + time::Duration::seconds(1) => {}
                    Taken::WaitUntil(t) => {
                        assert_eq!(t, now + time::Duration::seconds(61), "free again once the minute has rolled");
                        return got;
                    }
                }
            }
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += t.await.unwrap();
    }
    assert_eq!(taken, 20, "Finch's 20 a minute, across 8 concurrent callers");

    // All or none: the IP window is the tighter one here.
    let budget = Budget::new(store.as_ref());
    let (employment, ip) = (Window { reserve: 0, ..Window::product("employment") }, Window::ip("test", 5));
    let ip = Window { reserve: 0, ..ip };
    let both = [employment.clone(), ip.clone()];
    let mut granted = 0;
    while budget.try_take(&both, Priority::First, now).await.unwrap() == Taken::Yes {
        granted += 1;
    }
    assert_eq!(granted, 5);
    let logs = store.read_windows(&[&employment.name, &ip.name]).await.unwrap();
    let counted: Vec<u32> = logs.iter().map(|l| l.taken.iter().map(|(_, c)| c).sum()).collect();
    assert_eq!(counted, [5, 5], "nothing taken from one window without the other");

    // Finch said 429 anyway: the window waits a full minute, whoever asks.
    let company = Window::product("company");
    budget.block(&company, now).await.unwrap();
    let later = now + time::Duration::seconds(30);
    assert_eq!(
        budget.try_take(std::slice::from_ref(&company), Priority::First, later).await.unwrap(),
        Taken::WaitUntil(now + time::Duration::seconds(60))
    );
}

#[tokio::test]
async fn one_budget_in_memory() {
    one_budget_for_everyone(std::sync::Arc::new(perch::memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_budget_in_dynamodb() {
    let stack = perch_tests::TestStack::start().await;
    one_budget_for_everyone(stack.app.store.clone()).await;
}

// --- The sync engine, in process: memory store, in-process Finch --------------------------

use perch::domain::sync::{ChangeOp, RecordKind};
use perch::flows::sync::view;
use perch::flows::sync::{RunOutcome, Trigger};
use perch_tests::fast::Fast;
use perch_tests::syncing::*;
use serde_json::json;

#[tokio::test]
async fn a_first_sync_stores_every_record_sealed_and_the_feed_and_view_serve_them() {
    let (f, id, entity) = connected(ORG, &[]).await;
    let s = settings(&[]);
    let calls = |f: &Fast| {
        ["/employer/company", "/employer/directory"]
            .map(|p| f.finch_calls("GET", p))
            .into_iter()
            .chain(["/employer/individual", "/employer/employment"].map(|p| f.finch_calls("POST", p)))
            .collect::<Vec<_>>()
    };
    let before = calls(&f);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    // Four Finch calls for twenty people: the minimum the caps allow.
    let made: Vec<usize> = calls(&f).iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(made, [1, 1, 1, 1]);
    let st = state(&f, &id).await;
    assert_eq!(st["state"], "current", "{st}");
    assert_eq!(st["last_success"]["counts"], json!({"added": 61, "updated": 0, "removed": 0, "unchanged": 0}));
    assert!(st["last_success"]["data_retrieved"].is_string() && st["last_success"]["finch_request_ids"][0].is_string());
    assert!(st["next_attempt_at"].is_string(), "the next refresh is scheduled");

    let page = feed(&f, &id, None).await;
    assert_eq!(page.changes.len(), 61);
    assert!(!page.has_more);
    assert!(page.changes.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert!(page.changes.iter().all(|c| c.op == ChangeOp::Added && c.record.is_some()));
    let people = view::employees(&f.app, &acme(), id.as_str(), None, 8, None).await.unwrap();
    assert_eq!(people.employees.len(), 8);
    assert!(people.has_more);
    let mut all = people.employees.len();
    let mut cursor = people.next_cursor;
    while let Some(c) = cursor {
        let p = view::employees(&f.app, &acme(), id.as_str(), Some(&c), 8, None).await.unwrap();
        all += p.employees.len();
        assert!(p.employees.iter().all(|e| e.individual.is_some() && e.employment.is_some()));
        cursor = p.next_cursor;
    }
    assert_eq!(all, 20, "every person, joined");
    assert_eq!(f.app.data_keys.len(), 1, "the data key, unwrapped once, serves the next reads");

    // At rest: sealed. No record holds a name or an SSN in the clear.
    let person = f.finch.shared.world().roster(entity.as_str()).person(1).unwrap();
    let stored = f.mem.store.stored_record(&id, RecordKind::Individual, &entity, &person.id).unwrap();
    assert!(!String::from_utf8_lossy(&stored.sealed).contains(&person.last_name));
    let events = f.mem.events.typed(perch::events::SYNC_COMPLETED);
    assert_eq!((events.len(), events[0]["added"].as_u64()), (1, Some(61)));
    assert!(!events[0].to_string().contains(&person.last_name), "events carry counts, never data");
    assert!(f.finch.violations().is_empty(), "{:?}", f.finch.violations());
    assert_no_pii_logged(&f, &entity);
}

#[tokio::test]
async fn a_refresh_writes_only_what_changed_and_a_failed_pass_removes_nothing() {
    let (f, id, entity) = connected(ORG, &[]).await;
    let s = settings(&[("SYNC_DIRECTORY_PAGE", "7")]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let first = feed(&f, &id, None).await;
    assert_eq!(first.changes.len(), 61);

    // At the employer: one raise, one person gone from the provider, one hire.
    let (changed, gone) = {
        let mut w = f.finch.shared.world();
        let r = w.roster(entity.as_str());
        let changed = r.person(2).unwrap().id;
        let gone = r.person(3).unwrap().id;
        let mut patch = finch_emulator::people::Patch::default();
        patch.employment.insert("title".into(), json!("Principal Engineer"));
        r.change(2, patch);
        r.removed.insert(3);
        r.hire();
        (changed, gone)
    };
    // A pass that fails after its first page: nothing is removed, nothing is lost.
    f.mem.store.fail_next("save_seen", 1);
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("error"), Some("storage_unavailable")), "{st}");
    let partial = feed(&f, &id, Some(&first.next_cursor)).await;
    assert!(partial.changes.iter().all(|c| c.op != ChangeOp::Removed), "no removal from a partial pass");
    assert!(f.mem.store.stored_record(&id, RecordKind::Directory, &entity, &gone).is_some(), "still readable");
    assert_eq!(f.mem.events.typed(perch::events::SYNC_FAILED).len(), 1);

    // The retry resumes and completes: the changes, exactly, and the removal at the end.
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    let after = feed(&f, &id, Some(&partial.next_cursor)).await;
    let all: Vec<_> = partial.changes.iter().chain(after.changes.iter()).collect();
    let ops = |op: ChangeOp| all.iter().filter(|c| c.op == op).map(|c| (c.kind, c.id.clone())).collect::<Vec<_>>();
    // The raise, once (and the company, when the hire brought a department it had not).
    let updated: Vec<_> = ops(ChangeOp::Updated).into_iter().filter(|(k, _)| *k != RecordKind::Company).collect();
    assert_eq!(updated, vec![(RecordKind::Employment, changed.clone())], "the raise, once");
    assert_eq!(ops(ChangeOp::Added).len(), 3, "the hire's three records");
    let removed = ops(ChangeOp::Removed);
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert!(removed.iter().all(|(_, i)| *i == gone));
    assert!(all.iter().filter(|c| c.op == ChangeOp::Removed).all(|c| c.record.is_none()));
    assert_eq!(state(&f, &id).await["state"], "current");

    // Nothing changed since: a run writes nothing.
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    assert!(feed(&f, &id, Some(&after.next_cursor)).await.changes.is_empty());
    assert_eq!(state(&f, &id).await["last_success"]["counts"]["unchanged"], 61);
}

#[tokio::test]
async fn a_run_paused_by_the_budget_resumes_where_it_stopped() {
    // Two requests a minute per product, a second left of margin: the third directory page
    // must wait a minute, longer than the run may.
    let env = [("SYNC_DIRECTORY_PAGE", "7"), ("FINCH_PRODUCT_LIMIT", "2"), ("SYNC_DEADLINE_MARGIN_SECONDS", "1")];
    let (f, id, _) = connected(ORG, &[]).await;
    let s = settings(&env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let out = perch::flows::sync::run(
        &f.app,
        &s,
        &perch::flows::sync::SyncWork::new(id.clone(), Trigger::Connected),
        deadline,
    )
    .await
    .unwrap();
    let RunOutcome::Continue { work, delay } = out else { panic!("paused: {out:?}") };
    assert_eq!(work.trigger, Trigger::Resume);
    assert!(delay > Duration::from_secs(30) && delay <= Duration::from_secs(62), "until the window rolls: {delay:?}");
    let st = state(&f, &id).await;
    assert_eq!((st["state"].as_str(), st["progress"]["people_listed"].as_u64()), (Some("syncing"), Some(14)), "{st}");
    assert_eq!(f.finch_calls("GET", "/employer/directory"), 2);

    f.app.clock.advance(time::Duration::seconds(62));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    assert_eq!(perch::flows::sync::run(&f.app, &s, &work, deadline).await.unwrap(), RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!(st["state"], "current", "{st}");
    assert_eq!(st["last_success"]["counts"]["added"], 61, "each record once across both invocations");
    assert_eq!(f.finch_calls("GET", "/employer/directory"), 3, "no page fetched twice");
    assert!(feed(&f, &id, None).await.changes.iter().all(|c| c.op == ChangeOp::Added));
}

#[tokio::test]
async fn finch_not_ready_keeps_its_reason_and_a_refused_product_is_missing() {
    let (f, id, entity) = connected(&["company", "directory", "individual"], &[]).await;
    let s = settings(&[]);
    f.finch.shared.world().data_phases.insert(id.as_str().to_owned(), ("accountant_setup_pending".into(), None));
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str()),
        (Some("waiting_for_finch"), Some("accountant_setup_pending"))
    );
    assert_eq!(st["attempts"], 1);
    assert!(feed(&f, &id, None).await.changes.is_empty());

    f.finch.shared.world().data_phases.remove(id.as_str());
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!((st["state"].as_str(), st["products"].clone()), (Some("missing_scope"), json!(["employment"])), "{st}");
    assert_eq!(f.finch_calls("POST", "/employer/employment"), 0, "a product never granted is never asked");
    let people = view::employees(&f.app, &acme(), id.as_str(), None, 100, None).await.unwrap();
    assert_eq!(people.employees.len(), 20);
    assert!(people.employees.iter().all(|e| e.individual.is_some() && e.employment.is_none()));
    assert_no_pii_logged(&f, &entity);
}

#[tokio::test]
async fn a_401_stops_the_run_and_marks_the_connection() {
    let (f, id, _) = connected(ORG, &[]).await;
    let s = settings(&[]);
    f.finch.shared.world().connections.get_mut(id.as_str()).unwrap().status = "reauth".into();
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    assert_eq!(state(&f, &id).await["state"], "needs_reauth");
    let rec = f.mem.store.connections().into_iter().find(|r| r.connection_id == id).unwrap();
    assert_eq!(rec.status.as_str(), "reauth");
    assert!(f.events().iter().any(|(source, _, status)| source == "data_sync" && status == "reauth"));
    let failed = f.mem.events.typed(perch::events::SYNC_FAILED);
    assert_eq!(failed[0]["reason"], "needs_reauth");
    let refused = view::request_sync(&f.app, &acme(), id.as_str()).await.unwrap_err();
    assert!(matches!(refused, perch::Error::Conflict { code: "connection_not_syncable", .. }), "{refused:?}");
}

#[tokio::test]
async fn the_app_asks_once_while_a_run_is_due_and_sees_only_its_own_connections() {
    let (f, id, _) = connected(ORG, &[]).await;
    let q = &f.mem.sync_queue;
    let first = q.drain();
    assert_eq!((first.len(), first[0].0.trigger), (1, Trigger::Connected), "the callback queued the first sync");
    // A first sync queued moments ago counts as queued: the app's ask changes nothing.
    let asked = view::request_sync(&f.app, &acme(), id.as_str()).await.unwrap();
    assert!(!asked.queued);
    assert_eq!(serde_json::to_value(&asked).unwrap()["entities"][0]["state"], "queued");
    // Once it ran, the app may ask again: once.
    assert_eq!(sync(&f, &settings(&[]), &id, Trigger::Connected).await, RunOutcome::Finished);
    let asked = view::request_sync(&f.app, &acme(), id.as_str()).await.unwrap();
    assert!(asked.queued);
    let again = view::request_sync(&f.app, &acme(), id.as_str()).await.unwrap();
    assert!(!again.queued, "idempotent while a run is queued");
    let sent = q.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.trigger, Trigger::Requested);

    let other = Fast::customer("globex");
    for e in [
        view::sync_view(&f.app, &other, id.as_str()).await.map(drop).unwrap_err(),
        view::changes(&f.app, &other, id.as_str(), None, 10).await.map(drop).unwrap_err(),
        view::employees(&f.app, &other, id.as_str(), None, 10, None).await.map(drop).unwrap_err(),
        view::request_sync(&f.app, &other, id.as_str()).await.map(drop).unwrap_err(),
    ] {
        assert!(matches!(e, perch::Error::NotFound("connection")), "{e:?}");
    }
    assert!(q.sent().is_empty());
    let bad = view::changes(&f.app, &acme(), id.as_str(), Some("bm90LWEtY3Vyc29y"), 10).await.unwrap_err();
    assert!(matches!(bad, perch::Error::Invalid { code: "invalid_cursor", .. }));
}

#[tokio::test]
async fn the_schedule_sends_what_is_due_once_and_an_unchanged_snapshot_costs_nothing() {
    let (f, id, _) = connected(ORG, &[]).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let q = perch::memory::MemorySyncQueue::default();
    let now = f.app.clock.now();
    assert_eq!(perch::flows::sync::plan_due(&f.app, &q, now, 100).await.unwrap(), 0, "not due for a day");
    f.app.clock.advance(time::Duration::hours(25));
    let later = f.app.clock.now();
    assert_eq!(perch::flows::sync::plan_due(&f.app, &q, later, 100).await.unwrap(), 1);
    assert_eq!(perch::flows::sync::plan_due(&f.app, &q, later, 100).await.unwrap(), 0, "planned once");
    let (work, _) = q.drain().remove(0);
    assert_eq!(work.trigger, Trigger::Scheduled);

    // The status sweep saw the same `last_successful_sync` as the run pulled: no Finch call.
    let before = f.finch.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    assert_eq!(perch::flows::sync::run(&f.app, &s, &work, deadline).await.unwrap(), RunOutcome::Finished);
    assert_eq!(f.finch.requests().len(), before, "the same snapshot is not pulled twice");
}

#[tokio::test]
async fn data_webhooks_queue_a_run_of_their_entity_and_disconnect_shreds_the_data() {
    let (f, id, entity) = connected(ORG, &[]).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    f.mem.sync_queue.drain();
    let at = time::OffsetDateTime::now_utc().unix_timestamp();
    for (event_type, expected) in [
        ("individual.updated", "sync_queued"),
        ("job.initial_data_sync_org.succeeded", "sync_queued"),
        ("company.updated", "refresh_requested"),
        ("pay_statement.updated", "sync_queued"),
        ("benefit.created", "ignored"),
    ] {
        let body = json!({"connection_id": id.as_str(), "entity_id": entity.as_str(), "company_id": "c",
            "account_id": "a", "event_type": event_type, "data": {"individual_id": "p-1", "payment_id": "pay-1"}});
        let (eid, ts, sig, bytes) = f.webhook(&body, at);
        let out = perch::flows::webhook::handle(&f.app, Some(&eid), Some(&ts), Some(&sig), &bytes).await.unwrap();
        assert_eq!(serde_json::to_value(out.status).unwrap(), expected, "{event_type}");
    }
    let sent = f.mem.sync_queue.drain();
    assert_eq!(sent.len(), 4, "individual, the org sync job, company.updated, the pay statement");
    assert!(sent.iter().all(|(w, _)| w.trigger == Trigger::Webhook && w.entities == Some(vec![entity.clone()])));
    // The payment a pay webhook names is kept as a hint; no other event carries one.
    let hinted: Vec<_> = sent.iter().filter_map(|(w, _)| w.payments.clone()).collect();
    assert_eq!(hinted, [vec!["pay-1".to_owned()]]);

    assert!(f.mem.store.data_items(&id) > 60);
    let done = perch::flows::lifecycle::disconnect(&f.app, &acme(), id.as_str()).await.unwrap();
    assert_eq!(done, perch::flows::lifecycle::Disconnected::Now);
    // The key went first (every record unreadable), then the items: 60-odd fit inline.
    assert_eq!(f.mem.store.data_items(&id), 0, "nothing of the connection's data is left");
    let gone = view::changes(&f.app, &acme(), id.as_str(), None, 10).await.unwrap_err();
    assert!(matches!(gone, perch::Error::Conflict { code: "connection_disconnected", .. }));
    // A worker still holding the message finds nothing to write to.
    assert_eq!(sync(&f, &s, &id, Trigger::Webhook).await, RunOutcome::Gone);
    assert_eq!(f.mem.store.data_items(&id), 0);
}

#[tokio::test]
async fn a_run_whose_key_was_shredded_midway_writes_nothing_more() {
    let (f, id, _) = connected(ORG, &[]).await;
    let s = settings(&[("SYNC_DIRECTORY_PAGE", "7")]);
    // The key exists (a first run made it); then disconnect's first step shreds it while a
    // run holds the lease: its next write is refused and it stops.
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    use perch::store::data::{DataKeyItems, PurgeData};
    let store = f.mem.store.clone();
    let now = f.app.clock.now();
    assert!(matches!(
        store.take_lease(&id, "other-run", now, now + time::Duration::minutes(5)).await.unwrap(),
        perch::store::data::Lease::Taken(_)
    ));
    assert!(store.shred_key(&id).await.unwrap());
    let write = perch::store::data::RecordWrites::apply_changes(store.as_ref(), &id, "other-run", 1_000, &[], now)
        .await
        .unwrap();
    assert_eq!(write, perch::store::data::Applied::LeaseLost);
}

// --- On the stack: moto, the functions behind the local router, the worker's handler -------

#[tokio::test]
async fn on_the_stack_a_connection_syncs_a_hire_reaches_the_feed_and_disconnect_leaves_nothing() {
    let stack = perch_tests::TestStack::start_syncing(|env| {
        env.insert("FINCH_TIMEOUT_MS", "30000".into());
    })
    .await;
    stack.enable_webhooks().await;
    let cb = stack.callback_url_for("acme", json!({ "products": ORG })).await;
    let back = stack.get(&cb, None).await;
    let id = perch_tests::query(&perch_tests::location(&back), "connection_id").expect("connected");
    assert_eq!(stack.run_sync_queue().await, 1, "the callback queued the first sync");
    let acme = stack.token("acme");
    let st = stack.get_ok(&acme, format!("/connections/{id}/sync")).await;
    assert_eq!(st["entities"][0]["state"], "current", "{st}");
    assert_eq!(st["entities"][0]["last_success"]["counts"]["added"], 61);
    let people = stack.get_ok(&acme, format!("/connections/{id}/employees?limit=500")).await;
    assert_eq!(people["employees"].as_array().unwrap().len(), 20);
    assert!(people["employees"][0]["individual"]["first_name"].is_string());
    let feed = stack.get_ok(&acme, format!("/connections/{id}/changes?limit=1000")).await;
    assert_eq!(feed["changes"].as_array().unwrap().len(), 61);
    let cursor = feed["next_cursor"].as_str().unwrap().to_owned();

    // The employer hires: Finch's three webhooks, each queueing a run; the feed shows the hire.
    let hired = stack.change_people(&id, &json!({"action": "hire"})).await;
    assert!(hired["webhook_statuses"].as_array().unwrap().iter().all(|s| s == 200), "{hired}");
    assert!(stack.run_sync_queue().await >= 1);
    let news = stack.get_ok(&acme, format!("/connections/{id}/changes?cursor={cursor}")).await;
    let changes = news["changes"].as_array().unwrap();
    let hire: Vec<_> = changes.iter().filter(|c| c["id"] == hired["individual_id"]).collect();
    assert_eq!(hire.len(), 3, "the hire's directory entry, individual and employment: {news}");
    assert!(hire.iter().all(|c| c["op"] == "added" && c["record"].is_object()));
    // Besides, at most the company (its departments are the people's).
    assert!(changes.iter().all(|c| c["id"] == hired["individual_id"] || c["kind"] == "company"), "{news}");

    // Disconnect: the key first, then every item of the connection's data.
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(r.status(), 204);
    stack.run_sync_queue().await;
    let left = stack.records_items(&id).await;
    assert_eq!(left, 0);
    let r = stack.get(&format!("/connections/{id}/employees"), Some(&acme)).await;
    assert_eq!(r.status(), 409, "a disconnected connection has no data");
    let world_entity = stack.finch.shared.world().connections[&id].account_id();
    let people: Vec<finch_emulator::people::Person> = {
        let mut w = stack.finch.shared.world();
        let r = w.roster(&world_entity).clone();
        r.numbers().filter_map(|n| r.person(n)).collect()
    };
    let logs = perch_tests::captured_logs();
    for p in &people {
        for v in [&p.ssn, &p.dob, &p.work_email, &p.phone] {
            assert!(!logs.contains(v.as_str()), "personal data of person {} reached the logs", p.number);
        }
    }
}

#[tokio::test]
async fn finch_not_ready_or_unreadable_midway_leaves_the_snapshot_and_removes_nothing() {
    let (f, id, entity) = connected(ORG, &[]).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let after_first = feed(&f, &id, None).await.next_cursor;
    let gone = {
        let mut w = f.finch.shared.world();
        let r = w.roster(entity.as_str());
        let id = r.person(3).unwrap().id;
        r.removed.insert(3);
        id
    };
    let kept = |f: &Fast| f.mem.store.stored_record(&id, RecordKind::Individual, &entity, &gone).is_some();

    // A 202 after the directory and the individuals: waiting, nothing removed.
    f.inject(json!({"path": "/employer/employment", "status": 202, "times": 1}));
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    assert_eq!(state(&f, &id).await["state"], "waiting_for_finch");
    assert!(kept(&f), "a partial pass removes nothing");
    // A body Perch cannot read: an error with its reason, nothing removed.
    f.inject(json!({"path": "/employer/individual", "status": 200, "times": 1}));
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("error"), Some("finch_malformed_reply")), "{st}");
    assert!(kept(&f));
    let feed_so_far = feed(&f, &id, Some(&after_first)).await;
    assert!(feed_so_far.changes.iter().all(|c| c.op != ChangeOp::Removed), "no phantom removal");

    // Finch answers again: the complete pass removes the person, once.
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    assert_eq!(state(&f, &id).await["state"], "current");
    let removed: Vec<_> =
        feed(&f, &id, Some(&after_first)).await.changes.into_iter().filter(|c| c.op == ChangeOp::Removed).collect();
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(|c| c.id == gone) && !kept(&f));
}

#[tokio::test]
async fn someone_who_leaves_between_the_directory_and_the_batch_keeps_their_records_until_a_pass_confirms_it() {
    let (f, id, entity) = connected(ORG, &[]).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let cursor = feed(&f, &id, None).await.next_cursor;
    let leaver = f.finch.shared.world().roster(entity.as_str()).person(4).unwrap().id;
    // The individuals' request waits at a gate while the person leaves the provider.
    f.inject(json!({"path": "/employer/individual", "hold": "batch", "times": 1}));
    let meanwhile = async {
        f.finch.shared.holds().arrived("batch").await;
        f.finch.shared.world().roster(entity.as_str()).removed.insert(4);
        f.finch.shared.holds().release("batch");
    };
    let (out, ()) = tokio::join!(sync(&f, &s, &id, Trigger::Requested), meanwhile);
    assert_eq!(out, RunOutcome::Finished);
    assert_eq!(state(&f, &id).await["state"], "current", "a 404 item is not a failed run");
    let changes = feed(&f, &id, Some(&cursor)).await.changes;
    assert!(changes.is_empty(), "the listed person's records are kept as they were: {changes:?}");
    for kind in [RecordKind::Directory, RecordKind::Individual, RecordKind::Employment] {
        assert!(f.mem.store.stored_record(&id, kind, &entity, &leaver).is_some(), "{kind:?}");
    }
    // The next pass no longer lists them: removed, all three (and the company may change with
    // its people: its departments are theirs).
    assert_eq!(sync(&f, &s, &id, Trigger::Requested).await, RunOutcome::Finished);
    let changes: Vec<_> =
        feed(&f, &id, Some(&cursor)).await.changes.into_iter().filter(|c| c.kind != RecordKind::Company).collect();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c.op == ChangeOp::Removed && c.id == leaver));
}

#[tokio::test]
async fn a_new_connection_waits_through_finchs_first_sync_then_syncs() {
    let f = start(&[]).await;
    // Finch's first sync of every new connection takes an hour here.
    f.finch.shared.world().new_connection_phase = Some(("data_sync_in_progress".into(), Some(3_600)));
    let (id, _) = connect_on(&f, ORG).await;
    let s = settings(&[]);
    assert_eq!(sync(&f, &s, &id, Trigger::Connected).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str()),
        (Some("waiting_for_finch"), Some("data_sync_in_progress"))
    );
    let at = time::OffsetDateTime::parse(
        st["next_attempt_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = at - f.app.clock.now();
    assert!(wait > time::Duration::minutes(4) && wait <= time::Duration::minutes(5), "retried in 5 minutes: {wait}");
    // An hour later (Finch's clock), the data is there.
    f.finch.shared.world().clock_offset_secs += 3_601;
    assert_eq!(sync(&f, &s, &id, Trigger::Scheduled).await, RunOutcome::Finished);
    let st = state(&f, &id).await;
    assert_eq!(st["state"], "current", "{st}");
    assert_eq!(st["attempts"], 0);
}

#[tokio::test]
async fn the_sweep_and_the_sync_take_from_the_same_finch_windows() {
    use perch::store::BudgetWindows;
    let (f, id, _) = connected(ORG, &[]).await;
    assert_eq!(sync(&f, &settings(&[]), &id, Trigger::Connected).await, RunOutcome::Finished);
    let introspections = f.finch_calls("GET", "/introspect");
    let sweep = perch_tests::sweep_settings(&[("SWEEP_RECHECK_SECONDS", "0")]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = perch::flows::sweep::run_round(&f.app, &sweep, deadline).await.unwrap();
    assert_eq!(report.checked, 1);
    let checks = f.finch_calls("GET", "/introspect") - introspections;
    let ip = f.mem.store.read_windows(&["ip:default"]).await.unwrap().remove(0);
    let taken: u32 = ip.taken.iter().map(|(_, n)| n).sum();
    assert_eq!(taken as usize, 4 + checks, "the sync's four requests and the sweep's, in one window");
    let company = f.mem.store.read_windows(&["product:company"]).await.unwrap().remove(0);
    assert!(company.taken.iter().map(|(_, n)| n).sum::<u32>() >= 1);
}

/// AWS failing in the middle of a run (the SDK's own retries exhausted): the run stops with a
/// reason, what it had written stays consistent and readable, nothing is removed, and the next
/// run completes from there. A refresh that fails leaves the previous snapshot as it was.
#[tokio::test]
async fn dynamodb_and_kms_failing_mid_run_leave_a_clear_state_and_a_consistent_snapshot() {
    use perch_tests::aws_faults::AwsFault;
    use serde_json::Value;
    let stack = perch_tests::TestStack::start_syncing_with_aws_faults(|env| {
        env.insert("FINCH_TIMEOUT_MS", "30000".into());
        // Pages of 40: a pass of 100 people is several pages and several transactions.
        env.insert("SYNC_DIRECTORY_PAGE", "40".into());
    })
    .await;
    let aws = stack.aws.as_ref().unwrap();
    stack.finch.shared.world().default_employees = Some(100);
    let id = stack.connect_with("acme", ORG).await;
    let acme = stack.token("acme");
    let people = |v: &Value| v["employees"].as_array().map_or(0, Vec::len);
    let all_three = |v: &Value| {
        v["employees"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["directory"].is_object() && p["individual"].is_object() && p["employment"].is_object())
    };

    // KMS refuses to make the connection's data key: nothing written, the reason said.
    aws.inject(AwsFault::outage("TrentService.GenerateDataKey", 500, "KMSInternalException"));
    stack.run_sync_queue().await;
    let st = stack.get_ok(&acme, format!("/connections/{id}/sync")).await;
    assert_eq!(
        (st["entities"][0]["state"].as_str(), st["entities"][0]["reason"].as_str()),
        (Some("error"), Some("key_unavailable")),
        "{st}"
    );
    assert_eq!(people(&stack.get_ok(&acme, format!("/connections/{id}/employees?limit=500")).await), 0);

    // DynamoDB refuses the run's second write of records and their feed entries: the first
    // stays, whole.
    aws.clear();
    let records_write = || AwsFault {
        body_contains: Some("CH#".into()),
        ..AwsFault::outage("DynamoDB_20120810.TransactWriteItems", 500, "InternalServerError")
    };
    aws.inject(AwsFault { after: 1, ..records_write() });
    let r = stack.post_json(&format!("/connections/{id}/sync"), Some(&acme), &json!({})).await;
    assert_eq!(r.status(), 202);
    stack.run_sync_queue().await;
    assert!(aws.injected() >= 3, "the fault was met");
    let st = stack.get_ok(&acme, format!("/connections/{id}/sync")).await;
    assert_eq!(
        (st["entities"][0]["state"].as_str(), st["entities"][0]["reason"].as_str()),
        (Some("error"), Some("storage_unavailable")),
        "{st}"
    );
    let feed = stack.get_ok(&acme, format!("/connections/{id}/changes?limit=1000")).await;
    let partial = feed["changes"].as_array().unwrap().len();
    assert!(partial > 0 && partial < 301, "one transaction's changes, no more: {partial}");
    assert!(feed["changes"].as_array().unwrap().iter().all(|c| c["op"] == "added"));

    // Cleared: the next run completes; the feed is every record once, nothing removed.
    aws.clear();
    let r = stack.post_json(&format!("/connections/{id}/sync"), Some(&acme), &json!({})).await;
    assert_eq!(r.status(), 202);
    stack.run_sync_queue().await;
    let st = stack.get_ok(&acme, format!("/connections/{id}/sync")).await;
    assert_eq!(st["entities"][0]["state"], "current", "{st}");
    let view = stack.get_ok(&acme, format!("/connections/{id}/employees?limit=500")).await;
    assert_eq!(people(&view), 100);
    assert!(all_three(&view));
    let feed = stack.get_ok(&acme, format!("/connections/{id}/changes?limit=1000")).await;
    let changes = feed["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 301, "the company and 100 people's three records, each added once");
    assert!(changes.iter().all(|c| c["op"] == "added"));
    let cursor = feed["next_cursor"].as_str().unwrap().to_owned();

    // A refresh (someone leaves, someone is hired) cut by DynamoDB at its first write: the
    // previous snapshot is whole and the feed has nothing new.
    let gone = view["employees"][0]["individual_id"].as_str().unwrap().to_owned();
    stack.change_people(&id, &json!({"action": "remove", "individual_id": gone})).await;
    stack.change_people(&id, &json!({"action": "hire"})).await;
    aws.inject(records_write());
    let r = stack.post_json(&format!("/connections/{id}/sync"), Some(&acme), &json!({})).await;
    assert!(r.status() == 202 || r.status() == 200, "{}", r.status());
    stack.run_sync_queue().await;
    let st = stack.get_ok(&acme, format!("/connections/{id}/sync")).await;
    assert_eq!(st["entities"][0]["state"], "error", "{st}");
    assert_eq!(st["entities"][0]["last_success"]["counts"]["added"], 301, "the last success is kept: {st}");
    let before = stack.get_ok(&acme, format!("/connections/{id}/employees?limit=500")).await;
    assert_eq!(people(&before), 100);
    assert!(all_three(&before));
    let news = stack.get_ok(&acme, format!("/connections/{id}/changes?cursor={cursor}")).await;
    assert_eq!(news["changes"], json!([]), "nothing half-written reached the feed");

    aws.clear();
    stack.post_json(&format!("/connections/{id}/sync"), Some(&acme), &json!({})).await;
    stack.run_sync_queue().await;
    let news = stack.get_ok(&acme, format!("/connections/{id}/changes?cursor={cursor}&limit=1000")).await;
    let changes = news["changes"].as_array().unwrap();
    let removed: Vec<_> = changes.iter().filter(|c| c["op"] == "removed").collect();
    assert!(removed.len() == 3 && removed.iter().all(|c| c["id"] == gone.as_str()), "{news}");
    assert!(changes.iter().any(|c| c["op"] == "added"), "the hire arrives: {news}");
}
