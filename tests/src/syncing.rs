//! The sync engine's test helpers, in process: a Perch on the memory adapters with its own
//! Finch (see [`crate::fast`]), a connection made through the real Connect flow, and the app's
//! views of it.

use std::time::Duration;

use crate::fast::Fast;
use perch::domain::{ConnectionId, CustomerId, EntityId};
use perch::flows::sync::view::{self, ChangesPage};
use perch::flows::sync::{RunOutcome, SyncSettings, SyncWork, Trigger, run};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const ORG: &[&str] = &["company", "directory", "individual", "employment"];

/// A Perch with one connection of `customer` granted `products`, its id and entity.
pub async fn connected(products: &[&str], env: &[(&str, &str)]) -> (Fast, ConnectionId, EntityId) {
    let f = start(env).await;
    let (id, entity) = connect_on(&f, products).await;
    (f, id, entity)
}

/// A Perch whose Finch calls may take long: the emulator checks every answer against
/// Finch's spec, which takes a while for a batch of people on a busy machine (the fast
/// tests' 2 s would make a slow answer a failed run).
pub async fn start(env: &[(&str, &str)]) -> Fast {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "FINCH_TIMEOUT_MS") {
        env.push(("FINCH_TIMEOUT_MS", "30000"));
    }
    Fast::start_with(&env).await
}

/// A connection of customer `acme` on `f`, granted `products`: its id and entity.
pub async fn connect_on(f: &Fast, products: &[&str]) -> (ConnectionId, EntityId) {
    let s = f.session("acme", json!({ "products": products })).await.expect("session");
    let (code, state) = f.login(&s.connect_url).await;
    let out = f.redirect_callback(&code, state.as_deref()).await.expect("callback");
    let id = out.connection.connection_id.clone();
    let rec = f.mem.store.connections().into_iter().find(|r| r.connection_id == id).expect("stored");
    let entity = rec.entities[0].id.clone();
    (id, entity)
}

pub fn settings(env: &[(&str, &str)]) -> SyncSettings {
    SyncSettings::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap()
}

pub fn acme() -> CustomerId {
    Fast::customer("acme")
}

pub async fn sync(f: &Fast, s: &SyncSettings, id: &ConnectionId, trigger: Trigger) -> RunOutcome {
    let deadline = Instant::now() + Duration::from_secs(120);
    run(&f.app, s, &SyncWork::new(id.clone(), trigger), deadline).await.expect("run")
}

/// Runs `trigger` and its continuations to the end, Perch's clock moved past each wait as the
/// queue's delay would move it; the number of continuations. Each invocation's deadline is a
/// few seconds past the run's margin, so a wait for Finch's window is never slept for real.
pub async fn sync_through(f: &Fast, s: &SyncSettings, id: &ConnectionId, trigger: Trigger) -> usize {
    let mut work = SyncWork::new(id.clone(), trigger);
    for continuations in 0..100 {
        let deadline = Instant::now() + s.deadline_margin + Duration::from_secs(5);
        match run(&f.app, s, &work, deadline).await.expect("run") {
            RunOutcome::Finished => return continuations,
            RunOutcome::Continue { work: next, delay } => {
                f.app.clock.advance(time::Duration::try_from(delay).expect("a delay") + time::Duration::seconds(1));
                work = next;
            }
            other => panic!("the run stopped: {other:?}"),
        }
    }
    panic!("a hundred continuations and still not done");
}

pub async fn state(f: &Fast, id: &ConnectionId) -> Value {
    let v = view::sync_view(&f.app, &acme(), id.as_str()).await.expect("view");
    serde_json::to_value(&v).unwrap()["entities"][0].clone()
}

pub async fn feed(f: &Fast, id: &ConnectionId, cursor: Option<&str>) -> ChangesPage {
    view::changes(&f.app, &acme(), id.as_str(), cursor, 1_000).await.expect("changes")
}

/// Every personal value of the emulator's people for `entity`: none may reach a log.
pub fn assert_no_pii_logged(f: &Fast, entity: &EntityId) {
    let people: Vec<finch_emulator::people::Person> = {
        let mut w = f.finch.shared.world();
        let r = w.roster(entity.as_str()).clone();
        r.numbers().filter_map(|n| r.person(n)).collect()
    };
    assert!(!people.is_empty());
    let logs = crate::captured_logs();
    for p in &people {
        for value in
            [&p.ssn, &p.dob, &p.work_email, &p.personal_email, &p.phone, &format!("\"amount\":{}", p.income_cents)]
        {
            assert!(!logs.contains(value.as_str()), "personal data of person {} reached the logs", p.number);
        }
    }
}
