//! Concurrency under load on the local stack: 1,000+ requests launched at once, mixing
//! callbacks, listings, reauthentication sessions, webhooks and two sweep rounds. No 5xx, no
//! duplicate connection, no lost update: every connection ends at its newest webhook status.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use perch::flows::sweep::{self, SweepSettings};
use perch_tests::TestStack;
use serde_json::json;

const CALLBACKS: usize = 100;
const LISTS: usize = 400;
const REAUTHS: usize = 100;
const WEBHOOKED: usize = 50;
const WEBHOOKS_EACH: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_lose_nothing() {
    let stack = TestStack::start().await;
    let secret = stack.enable_webhooks().await;
    let seeded = stack.seed("load", WEBHOOKED).await;
    // Callbacks to run: one new customer each, prepared up to Finch's redirect.
    let mut callbacks = Vec::new();
    for i in 0..CALLBACKS {
        callbacks.push(stack.callback_url_for(&format!("cust-{i}"), json!({"products": ["company"]})).await);
    }
    let load = stack.token("load");
    let statuses = ["connected", "reauth", "error_permissions", "pending", "processing"];
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The newest webhook per connection (timestamps unique per connection; sent shuffled).
    let mut newest: HashMap<String, &str> = HashMap::new();
    let mut deliveries = Vec::new();
    for (n, id) in seeded.iter().enumerate() {
        for k in 0..WEBHOOKS_EACH {
            let status = statuses[(n + k * 3) % statuses.len()];
            // Older than any sweep observation, and well inside the 300 s tolerance however
            // slowly a loaded machine gets through the batch.
            let ts = now - 10 + k as i64;
            if k == WEBHOOKS_EACH - 1 {
                newest.insert(id.clone(), status);
            }
            let body =
                json!({"connection_id": id, "company_id": "c", "account_id": "a", "event_type": "account.updated",
                              "data": {"status": status, "authentication_method": "credential"}})
                .to_string();
            let event_id = format!("msg_load_{n}_{k}");
            let sig = finch_emulator::webhooks::sign(&secret, &event_id, ts, &body).unwrap();
            deliveries.push((event_id, ts, sig, body));
        }
    }
    deliveries.reverse();
    // Finch's own state agrees with its newest event, so a sweep observing it concurs.
    for (id, status) in &newest {
        stack.finch.shared.world().connections.get_mut(id).unwrap().status = (*status).to_owned();
    }

    let started = Instant::now();
    let timed = |f: reqwest::RequestBuilder| async move {
        let t = Instant::now();
        let r = f.send().await.unwrap();
        let location = r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (r.status().as_u16(), t.elapsed(), location)
    };
    let mut requests = Vec::new();
    for cb in &callbacks {
        requests.push(timed(stack.http.get(cb)));
    }
    for _ in 0..LISTS {
        requests.push(timed(stack.http.get(format!("{}/connections", stack.base)).bearer_auth(&load)));
    }
    for i in 0..REAUTHS {
        let id = &seeded[i % seeded.len()];
        requests.push(timed(
            stack
                .http
                .post(format!("{}/connections/{id}/reauthenticate", stack.base))
                .bearer_auth(&load)
                .json(&json!({})),
        ));
    }
    for (event_id, ts, sig, body) in &deliveries {
        requests.push(timed(
            stack
                .http
                .post(format!("{}/finch/webhooks", stack.base))
                .header("content-type", "application/json")
                .header("finch-event-id", event_id)
                .header("finch-timestamp", ts.to_string())
                .header("finch-signature", sig)
                .body(body.clone()),
        ));
    }
    let total = requests.len();
    let settings = SweepSettings::from_lookup(|k| match k {
        "SWEEP_BUDGET_REQUESTS" => Some("100000".into()),
        "SWEEP_BUDGET_WINDOW_SECONDS" => Some("1".into()),
        "SWEEP_RECHECK_SECONDS" => Some("0".into()),
        _ => None,
    })
    .unwrap();
    let sweeps = async {
        let mut checked = 0;
        for _ in 0..2 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            let r = sweep::run_round(&stack.app, &settings, deadline).await.unwrap();
            assert_eq!(r.failed, 0);
            checked += r.checked + r.superseded;
        }
        checked
    };
    let (results, swept) = tokio::join!(join_all(requests), sweeps);
    let elapsed = started.elapsed();

    let mut by_status: HashMap<u16, usize> = HashMap::new();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, l, _)| *l).collect();
    for (s, _, _) in &results {
        *by_status.entry(*s).or_default() += 1;
    }
    latencies.sort();
    assert!(total >= 1000);
    if by_status.keys().any(|s| *s >= 500) {
        let logs = perch_tests::captured_logs();
        let sample: Vec<&str> = logs.lines().filter(|l| l.contains("request failed")).take(3).collect();
        panic!("{by_status:?}\n{sample:#?}");
    }
    assert_eq!(by_status.get(&302), Some(&CALLBACKS), "{by_status:?}");
    assert_eq!(by_status.get(&201), Some(&REAUTHS), "{by_status:?}");
    assert_eq!(by_status.get(&200), Some(&(LISTS + WEBHOOKED * WEBHOOKS_EACH)), "{by_status:?}");
    assert!(swept >= 2 * WEBHOOKED as u64);

    // No duplicate: one connection per callback customer, one exchange each.
    // (A callback that failed also answers 302, back to the app with its reason: say which.)
    for (i, (_, _, location)) in results.iter().take(CALLBACKS).enumerate() {
        if stack.list(&format!("cust-{i}")).await.len() != 1 {
            let request = location.as_deref().and_then(|l| l.split("request_id=").nth(1)).unwrap_or("-");
            let logs = perch_tests::captured_logs();
            let why: Vec<&str> = logs.lines().filter(|l| l.contains(request)).collect();
            panic!("cust-{i} has no connection: its callback went to {location:?}; its logs: {why:#?}");
        }
    }
    assert_eq!(stack.finch_calls("POST", "/auth/token"), CALLBACKS);
    // No lost update: each connection holds its newest webhook status.
    for (id, status) in &newest {
        assert_eq!(stack.stored_status(id).await, *status, "{id}");
    }
    eprintln!(
        "load: {total} requests + {swept} sweep checks in {elapsed:.2?} ({:.0} req/s); p50 {:?}, p99 {:?}, max {:?}; statuses {by_status:?}",
        total as f64 / elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1],
    );
}
