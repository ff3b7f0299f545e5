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

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::app::AppState;
use crate::error::Error;
use crate::events::StatusChanged;
use crate::finch::{FinchClient, backoff};
use crate::store::{ConnectionRecord, Observation};
use crate::types::ConnectionStatus;

/// Retries per connection after the first attempt.
const MAX_RETRIES: u32 = 3;

/// How the sweep runs; read from the environment at cold start.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// `SWEEP_BUDGET_REQUESTS` (900) per `SWEEP_BUDGET_WINDOW_SECONDS` (300): Finch requests
    /// per window per egress IP, below Finch's 1,000 / 5 min.
    pub budget: u32,
    pub budget_window: Duration,
    /// `SWEEP_WORKERS` (1): invocations sharing the budget (the event source's max concurrency).
    pub workers: u32,
    /// `SWEEP_RECHECK_SECONDS` (86 400): a connection checked or updated more recently is skipped.
    pub recheck_after: Duration,
    /// `SWEEP_SEGMENTS` (8): parallel-scan segments per sweep.
    pub segments: u32,
    /// `SWEEP_PAGE_SIZE` (100): items read per scan page (the memory bound).
    pub page_size: i32,
    /// `SWEEP_IN_FLIGHT` (8): concurrent checks within an invocation.
    pub in_flight: usize,
    /// `SWEEP_QUEUE_URL`: the SQS queue of segments (required to fan out).
    pub queue_url: Option<String>,
    /// `SWEEP_TIME_MARGIN_SECONDS` (30): stop starting work this long before the deadline.
    pub time_margin: Duration,
}

impl SweepSettings {
    /// Reads the process environment; a refusal is logged (see [`Config::from_env`](crate::Config::from_env)).
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok()).inspect_err(crate::config::ConfigError::log)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let num = |name: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            let v = match get(name) {
                None => default,
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Invalid { name, reason: e.to_string() })?,
            };
            if v < min {
                return Err(ConfigError::Invalid { name, reason: format!("must be at least {min}") });
            }
            Ok(v)
        };
        let int = |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            let v = num(name, default, min)?;
            if v > max {
                return Err(ConfigError::Invalid { name, reason: format!("must be at most {max}") });
            }
            Ok(v)
        };
        Ok(Self {
            budget: int("SWEEP_BUDGET_REQUESTS", 900, 1, 1_000_000)? as u32,
            budget_window: Duration::from_secs(num("SWEEP_BUDGET_WINDOW_SECONDS", 300, 1)?),
            workers: int("SWEEP_WORKERS", 1, 1, 1000)? as u32,
            recheck_after: Duration::from_secs(num("SWEEP_RECHECK_SECONDS", 86_400, 0)?),
            segments: int("SWEEP_SEGMENTS", 8, 1, 1_000_000)? as u32,
            page_size: int("SWEEP_PAGE_SIZE", 100, 1, 1000)? as i32,
            in_flight: int("SWEEP_IN_FLIGHT", 8, 1, 256)? as usize,
            queue_url: get("SWEEP_QUEUE_URL").filter(|v| !v.trim().is_empty()),
            time_margin: Duration::from_secs(num("SWEEP_TIME_MARGIN_SECONDS", 30, 0)?),
        })
    }

    /// The spacing between two request slots of one invocation.
    pub fn slot(&self) -> Duration {
        self.budget_window.mul_f64(f64::from(self.workers) / f64::from(self.budget))
    }
}

/// Evenly spaced request slots: no bursts, so no rolling window is ever exceeded.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Self { interval, next: Mutex::new(Instant::now()) }
    }

    /// Waits for the next free slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Pushes every future slot back (Finch asked us to wait).
    pub async fn hold_off(&self, wait: Duration) {
        let mut next = self.next.lock().await;
        *next = (*next).max(Instant::now() + wait);
    }
}

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

enum Checked {
    Written { changed: bool },
    Superseded,
    Failed,
}

/// Checks one connection: decrypt, introspect (paced, retried), conditional write.
async fn check_one(
    app: &AppState,
    finch: &FinchClient,
    pacer: &Pacer,
    rec: &ConnectionRecord,
    counters: &Counters,
) -> Checked {
    let Some(ciphertext) = &rec.token else { return Checked::Superseded };
    let token = match app.cipher.decrypt(ciphertext, &rec.connection_id, &rec.customer).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "status check: token did not decrypt");
            return Checked::Failed;
        }
    };
    let mut attempt = 0;
    let observation = loop {
        pacer.acquire().await;
        counters.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        match finch.introspect(&token).await {
            Ok(i) => {
                let v = i.value;
                break Observation {
                    status: v.connection_status.status,
                    status_message: v.connection_status.message,
                    last_successful_sync: v.connection_status.last_successful_sync,
                    products: Some(v.products),
                    entity_ids: v.entities.map(|es| es.into_iter().map(|e| e.id).collect()),
                    request_id: i.request_id,
                    observed_at: now,
                };
            }
            // 401 reauthenticate_user is Finch's other way of saying `reauth`; any other 401
            // means the token was revoked outside Perch (a disconnect at Finch).
            Err(Error::Finch(e)) if e.status == 401 => {
                let status = if e.needs_reauth() { ConnectionStatus::Reauth } else { ConnectionStatus::Disconnected };
                break Observation {
                    status,
                    status_message: e.message.clone(),
                    last_successful_sync: rec.last_successful_sync.clone(),
                    products: None,
                    entity_ids: None,
                    request_id: e.request_id.clone(),
                    observed_at: now,
                };
            }
            Err(e) => {
                let (retryable, wait) = match &e {
                    Error::Finch(f) => (f.is_retryable(), f.retry_after),
                    Error::FinchTransport { .. } => (true, None),
                    _ => (false, None),
                };
                if matches!(&e, Error::Finch(f) if f.status == 429) {
                    counters.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !retryable || attempt >= MAX_RETRIES {
                    tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), attempts = attempt + 1, "status check failed");
                    return Checked::Failed;
                }
                let wait = wait.unwrap_or_else(|| backoff(attempt));
                pacer.hold_off(wait).await;
                attempt += 1;
            }
        }
    };
    let changed = observation.status != rec.status;
    match app.store.record_check(&rec.connection_id, rec.version, &observation).await {
        Ok(true) => {
            if changed {
                app.events
                    .publish(&StatusChanged {
                        connection_id: rec.connection_id.clone(),
                        customer_id: rec.customer.clone(),
                        provider_id: rec.provider_id.clone(),
                        previous_status: Some(rec.status.clone()),
                        status: observation.status.clone(),
                        source: "status_check",
                        observed_at: observation.observed_at,
                    })
                    .await;
            }
            Checked::Written { changed }
        }
        Ok(false) => Checked::Superseded,
        Err(e) => {
            tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "status check not recorded");
            Checked::Failed
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
}

/// What the page reader hands the checkers: a connection to check (tagged with the page it
/// came from), the size of a page just read, or why reading stopped early.
enum Job {
    Check(Box<ConnectionRecord>, PageTag),
    PageRead(usize),
    /// The deadline came before this page was read.
    Stopped(PageTag),
    ScanFailed(Error),
}

/// A page's place in the segment: its order, and the key it was read from (a continuation
/// resumes there).
#[derive(Clone)]
struct PageTag {
    index: u64,
    start: Arc<Option<String>>,
}

enum Done {
    Checked(Checked),
    PageRead(usize),
    /// Not done: the deadline came first; the segment resumes at this page.
    Interrupted(PageTag),
    ScanFailed(Error),
}

/// Whether `deadline` is `margin` away or closer: time to stop starting work.
fn past_margin(deadline: Instant, margin: Duration) -> bool {
    deadline.saturating_duration_since(Instant::now()) <= margin
}

/// Runs one segment until it is done or `deadline` (minus the margin) is near.
///
/// The scan and the checks are one pipeline: `in_flight` checks stay busy across page
/// boundaries, and the next page is read while the last checks of the previous one are still
/// waiting on Finch. Draining each page before reading the next would leave slots idle at
/// every page's tail (with 100 items, 64 in flight and Finch at 100 ms: two rounds per page,
/// at most 500 checks/s instead of 640). Memory stays bounded: the reader runs only as far
/// ahead as the checkers pull, at most one page beyond the one being checked.
#[tracing::instrument(skip_all, fields(segment = work.segment, total = work.total))]
pub async fn run_segment(
    app: &AppState,
    settings: &SweepSettings,
    pacer: &Pacer,
    work: SegmentWork,
    deadline: Instant,
) -> Result<SegmentReport, Error> {
    let finch = app.finch.with_max_retries(0);
    let cutoff = work.round_started - settings.recheck_after;
    let counters = Arc::new(Counters::default());
    let mut report = SegmentReport::default();
    let segment = i32::try_from(work.segment).map_err(|_| Error::invalid("invalid_segment", "segment out of range"))?;
    let total =
        i32::try_from(work.total).map_err(|_| Error::invalid("invalid_segment", "segment count out of range"))?;
    let margin = settings.time_margin;

    let first = PageTag { index: 0, start: Arc::new(work.start.clone()) };
    let pages = futures_util::stream::unfold(Some(first), move |tag| async move {
        let tag = tag?;
        if past_margin(deadline, margin) {
            return Some((vec![Job::Stopped(tag)], None));
        }
        match app.store.scan_due(segment, total, tag.start.as_deref(), settings.page_size, cutoff).await {
            Ok(page) => {
                let next = page.next.map(|n| PageTag { index: tag.index + 1, start: Arc::new(Some(n)) });
                let mut jobs = Vec::with_capacity(page.items.len() + 1);
                jobs.push(Job::PageRead(page.items.len()));
                jobs.extend(page.items.into_iter().map(|rec| Job::Check(Box::new(rec), tag.clone())));
                Some((jobs, next))
            }
            Err(e) => Some((vec![Job::ScanFailed(e)], None)),
        }
    });
    let (finch, counters) = (&finch, &counters);
    // Owned items: a borrowed stream item makes the future not `Send` (rust-lang/rust#110338).
    // Boxed: the pipeline's nested future types are otherwise too deep for the compiler's
    // layout computation in the binaries that embed it.
    let mut results: std::pin::Pin<Box<dyn futures_util::Stream<Item = Done> + Send + '_>> = Box::pin(
        pages
            .flat_map(futures_util::stream::iter)
            .map(move |job| async move {
                match job {
                    // Past the margin, leave the rest to the continuation.
                    Job::Check(_, tag) if past_margin(deadline, margin) => Done::Interrupted(tag),
                    Job::Check(rec, _) => Done::Checked(check_one(app, finch, pacer, &rec, counters).await),
                    Job::PageRead(n) => Done::PageRead(n),
                    Job::Stopped(tag) => Done::Interrupted(tag),
                    Job::ScanFailed(e) => Done::ScanFailed(e),
                }
            })
            .buffer_unordered(settings.in_flight),
    );
    // Resume at the earliest page with unfinished work: what was checked is filtered out by
    // `checked_at`, so nothing is checked twice.
    let mut resume: Option<PageTag> = None;
    let mut scan_error = None;
    while let Some(done) = results.next().await {
        match done {
            Done::Checked(Checked::Written { changed }) => {
                report.checked += 1;
                report.changed += u64::from(changed);
            }
            Done::Checked(Checked::Superseded) => report.superseded += 1,
            Done::Checked(Checked::Failed) => report.failed += 1,
            Done::PageRead(n) => report.max_page_items = report.max_page_items.max(n),
            Done::Interrupted(tag) => {
                if resume.as_ref().is_none_or(|r| tag.index < r.index) {
                    resume = Some(tag);
                }
            }
            // The checks already under way finish (and are recorded); then the message fails
            // and SQS retries the segment, whose filter skips what was done.
            Done::ScanFailed(e) => scan_error = Some(e),
        }
    }
    if let Some(e) = scan_error {
        return Err(e);
    }
    report.next = resume.map(|tag| SegmentWork { start: (*tag.start).clone(), ..work });
    report.finch_requests = counters.requests.load(std::sync::atomic::Ordering::Relaxed);
    report.rate_limited = counters.rate_limited.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        checked = report.checked,
        changed = report.changed,
        superseded = report.superseded,
        failed = report.failed,
        finch_requests = report.finch_requests,
        rate_limited = report.rate_limited,
        continues = report.next.is_some(),
        "status check segment done"
    );
    Ok(report)
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
pub async fn run_round(app: &AppState, settings: &SweepSettings, deadline: Instant) -> Result<SegmentReport, Error> {
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

/// Sends work items to the sweep queue (in batches of 10, SQS's limit).
pub async fn enqueue(sqs: &aws_sdk_sqs::Client, queue_url: &str, work: &[SegmentWork]) -> Result<(), Error> {
    for (n, chunk) in work.chunks(10).enumerate() {
        let mut batch = sqs.send_message_batch().queue_url(queue_url);
        for (i, w) in chunk.iter().enumerate() {
            let body = serde_json::to_string(w).map_err(|e| Error::internal_from("serialising sweep work", e))?;
            let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("w{n}-{i}"))
                .message_body(body)
                .build()
                .map_err(|e| Error::internal_from("building an SQS entry", e))?;
            batch = batch.entries(entry);
        }
        let out = batch.send().await.map_err(|e| {
            let r = crate::error::aws_retryable(&e);
            Error::aws("sqs", "SendMessageBatch", r, e)
        })?;
        if !out.failed().is_empty() {
            return Err(Error::Aws {
                service: "sqs",
                operation: "SendMessageBatch",
                retryable: true,
                source: format!("{} entries not accepted", out.failed().len()).into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
