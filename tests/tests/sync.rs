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
