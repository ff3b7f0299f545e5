//! The status sweep at scale, in its own test binary so that nothing else (no log capture,
//! no other test) shares its memory: 10,000 connections against the emulator enforcing Finch's
//! IP limit with time compressed, zero 429s, and memory that does not grow with the table.

use std::time::Duration;

use perch::flows::sweep::{self, Pacer, SegmentReport};
use perch_tests::{TestStack, sweep_settings};
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;

/// This process's resident memory. Without `/proc` the memory bound could not be checked, so
/// the test fails rather than compare zeros.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (the memory check needs it)");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("a VmRSS line in /proc/self/status")
}

/// 10,000 connections (`PERCH_SWEEP_CONNECTIONS` to change) against the emulator enforcing
/// Finch's IP limit, with time compressed (1,000 requests per 2 s instead of per 5 min).
#[tokio::test]
async fn ten_thousand_connections_sweep_with_no_429_and_bounded_memory() {
    let n: usize = std::env::var("PERCH_SWEEP_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let stack = TestStack::start_quiet().await;
    let seeded_in = std::time::Instant::now();
    let ids = stack.seed("bulk", n).await;
    for id in ids.iter().step_by(1000) {
        stack.finch.shared.world().connections.get_mut(id).unwrap().status = "reauth".into();
    }
    stack.finch.shared.world().rate_limits =
        Some(serde_json::from_value(json!({"ip_limit": 1000, "ip_window_ms": 2000, "penalty_ms": 60000})).unwrap());
    let s = sweep_settings(&[
        ("SWEEP_BUDGET_REQUESTS", "900"),
        // This test measures the sweep's own pacing at compressed time; the shared windows
        // count whole seconds of real time (tests/tests/sync.rs tests them with the sweep).
        ("SWEEP_SHARED_BUDGET", "false"),
        ("SWEEP_BUDGET_WINDOW_SECONDS", "2"),
        ("SWEEP_SEGMENTS", "4"),
        ("SWEEP_IN_FLIGHT", "16"),
        ("SWEEP_PAGE_SIZE", "100"),
    ]);
    eprintln!("seeded {n} connections in {:?}", seeded_in.elapsed());
    // Memory must not follow the table: measure after the first segment (pools and caches
    // warm) and again after the other three, three times as many connections later.
    let pacer = Pacer::new(s.slot());
    let started = std::time::Instant::now();
    let mut r = SegmentReport::default();
    let mut rss = Vec::new();
    for w in sweep::plan(&s, OffsetDateTime::now_utc()) {
        let x =
            sweep::run_segment(&stack.app, &s, &pacer, w, Instant::now() + Duration::from_secs(1800)).await.unwrap();
        assert!(x.next.is_none());
        r.checked += x.checked;
        r.changed += x.changed;
        r.failed += x.failed;
        r.rate_limited += x.rate_limited;
        r.max_page_items = r.max_page_items.max(x.max_page_items);
        rss.push(rss_kib());
    }
    let elapsed = started.elapsed();
    let grown = rss[rss.len() - 1].saturating_sub(rss[0]);
    assert_eq!((r.checked as usize, r.failed), (n, 0), "{r:?}");
    assert_eq!(r.changed as usize, ids.iter().step_by(1000).count());
    assert_eq!(r.rate_limited, 0);
    assert_eq!(stack.finch.shared.world().rate_state.rejected, 0, "the emulator refused nothing");
    assert!(r.max_page_items <= 100);
    // Pacing: never faster than the budget (450/s), so at least n/450 seconds.
    assert!(elapsed.as_secs_f64() >= (n as f64 / 450.0) * 0.95, "{elapsed:?}");
    // The emulator in this process keeps a record of every request (~150 B each, ~1 MiB here);
    // the sweep itself holds one page. Growth with the table (records, tokens) would be tens of MiB.
    assert!(grown < 6 * 1024, "RSS grew by {grown} KiB over the last three segments: {rss:?}");
    eprintln!(
        "swept {n} connections in {elapsed:?} ({:.0}/s), RSS by segment {rss:?} KiB",
        n as f64 / elapsed.as_secs_f64()
    );
}
