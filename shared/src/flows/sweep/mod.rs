//! The status sweep: `/introspect` for every connection, paced under Finch's limits, fanned
//! out over DynamoDB parallel-scan segments carried by SQS.
//!
//! **Shape.** The EventBridge schedule invokes the function with a scheduled event; it
//! *plans*: one SQS message per scan segment. The same function consumes the queue; each
//! message is one segment (or the rest of one), read page by page (`limit` items), checked
//! with at most `in_flight` concurrent calls. Near the Lambda deadline it stops starting work
//! and sends the rest of its segment back to the queue. Failed messages are reported as
//! partial-batch failures so SQS retries only those. Memory is one page plus the calls in
//! flight, whatever the table size. No home-made queue or scheduler: SQS holds the work.
//!
//! **Resuming without double work.** A continuation starts again at the *beginning* of the
//! page it was on; the scan's filter skips every connection already checked this round
//! (`checked_at` after the cutoff) or updated by a webhook since (`status_observed_at`), so
//! nothing is checked twice and nothing is lost if an invocation dies.
//!
//! **Never overwriting newer data.** A check writes only if the connection's `version` is the
//! one it read: a webhook, a re-authentication or a disconnect that landed during the call
//! wins, and the check's (older) result is dropped.
//!
//! **Pacing.** Finch limits an IP to 1,000 requests per 5 minutes (with a 60-minute penalty
//! when exceeded). The sweep spends a configured budget below that — `SWEEP_BUDGET_REQUESTS`
//! per `SWEEP_BUDGET_WINDOW_SECONDS` (default 900 / 300 s), shared by `SWEEP_WORKERS`
//! concurrent invocations (the queue's maximum concurrency) — as evenly spaced request slots,
//! so there is no burst to trip a rolling window. Retries (429, 408, 5xx, transport; at most 3
//! per connection; `Retry-After` honoured, else 0.5 s·2ⁿ ≤ 8 s with jitter) take slots too.
//!
//! **The bound.** One check is one Finch request and one KMS `Decrypt`. At the default budget
//! an egress IP sustains 3 checks/s = 10,800 connections per hour. 10⁶ connections are covered
//! by (a) webhooks, which update a connection at once and take it out of the next sweep,
//! (b) `SWEEP_RECHECK_SECONDS` (default 24 h) so each connection is polled at most once per
//! period, and (c) more egress IPs: the budget is per IP, so N NAT gateways (one per subnet
//! the sweep runs in) give N × 10,800 per hour — a full daily pass over 10⁶ needs 4 IPs.

mod check;
mod pacer;
mod segment;
mod settings;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

pub use pacer::Pacer;
pub use segment::run_segment;
pub use settings::SweepSettings;

use crate::app::{Adapters, AppState};
use crate::domain::Error;

/// One unit of work: a scan segment, from `start` (a `pk`) or its beginning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentWork {
    pub segment: u32,
    pub total: u32,
    #[serde(default)]
    pub start: Option<String>,
    /// When this sweep round began (RFC 3339): fixes the cutoff across continuations.
    #[serde(with = "time::serde::rfc3339")]
    pub round_started: OffsetDateTime,
}

/// What a segment run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SegmentReport {
    pub checked: u64,
    pub changed: u64,
    /// Dropped because a newer change landed during the check.
    pub superseded: u64,
    pub failed: u64,
    pub finch_requests: u64,
    pub rate_limited: u64,
    /// The most items held at once (a page): the memory bound in action.
    pub max_page_items: usize,
    /// The rest of the segment, when the deadline came first.
    pub next: Option<SegmentWork>,
}

impl SegmentReport {
    /// Adds another run's counts to these (the continuation is not carried over).
    pub fn absorb(&mut self, other: &SegmentReport) {
        self.checked += other.checked;
        self.changed += other.changed;
        self.superseded += other.superseded;
        self.failed += other.failed;
        self.finch_requests += other.finch_requests;
        self.rate_limited += other.rate_limited;
        self.max_page_items = self.max_page_items.max(other.max_page_items);
    }
}

/// A whole round in this one invocation, segment after segment, without a queue (local runs
/// and small deployments). Stops at the deadline; `next` then says where.
pub async fn run_round<A: Adapters>(
    app: &AppState<A>,
    settings: &SweepSettings,
    deadline: Instant,
) -> Result<SegmentReport, Error> {
    let pacer = Pacer::new(settings.slot());
    let mut total = SegmentReport::default();
    for work in plan(settings, OffsetDateTime::now_utc()) {
        let r = run_segment(app, settings, &pacer, work, deadline).await?;
        total.absorb(&r);
        if r.next.is_some() {
            total.next = r.next;
            break;
        }
    }
    Ok(total)
}

/// The work of a new sweep round: one item per segment.
pub fn plan(settings: &SweepSettings, now: OffsetDateTime) -> Vec<SegmentWork> {
    (0..settings.segments)
        .map(|segment| SegmentWork { segment, total: settings.segments, start: None, round_started: now })
        .collect()
}

/// Where the sweep's work items go: SQS deployed ([`crate::aws::sqs`]), memory in tests.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    async fn send(&self, work: &[SegmentWork]) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_default_budget_is_three_requests_a_second_below_finchs_limit() {
        let s = SweepSettings::from_lookup(|_| None).unwrap();
        assert_eq!(s.slot(), Duration::from_millis(333) + Duration::from_nanos(333_333));
        assert!(f64::from(s.budget) / s.budget_window.as_secs_f64() < 1000.0 / 300.0);
        let shared = SweepSettings::from_lookup(|k| (k == "SWEEP_WORKERS").then(|| "3".to_owned())).unwrap();
        assert_eq!(shared.slot(), Duration::from_secs(1));
    }

    #[test]
    fn settings_are_validated() {
        assert!(SweepSettings::from_lookup(|k| (k == "SWEEP_BUDGET_REQUESTS").then(|| "0".to_owned())).is_err());
        assert!(SweepSettings::from_lookup(|k| (k == "SWEEP_IN_FLIGHT").then(|| "many".to_owned())).is_err());
    }

    #[test]
    fn a_round_has_one_work_item_per_segment() {
        let s = SweepSettings::from_lookup(|k| (k == "SWEEP_SEGMENTS").then(|| "4".to_owned())).unwrap();
        let w = plan(&s, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(w.len(), 4);
        assert!(w.iter().enumerate().all(|(i, x)| x.segment == i as u32 && x.total == 4 && x.start.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_evenly() {
        let p = Pacer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        for _ in 0..5 {
            p.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        p.hold_off(Duration::from_secs(2)).await;
        p.acquire().await;
        assert!(t0.elapsed() >= Duration::from_millis(2400));
    }
}
