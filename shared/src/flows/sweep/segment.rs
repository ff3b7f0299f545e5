//! One scan segment as a pipeline: pages read ahead, checks in flight, stop near the deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::check::{Checked, Counters, Gate, check_one};
use super::{Pacer, SegmentReport, SegmentWork, SweepSettings};
use crate::app::{Adapters, AppState};
use crate::domain::Error;
use crate::store::{ConnectionRecord, SweepStore};

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

/// Where a segment's scan stands: which segment, from where, which connections are due.
#[derive(Clone, Copy)]
struct Scan<'a> {
    store: &'a dyn SweepStore,
    segment: i32,
    total: i32,
    page_size: i32,
    cutoff: time::OffsetDateTime,
    deadline: Instant,
    margin: Duration,
}

impl<'a> Scan<'a> {
    /// The segment's pages, read one ahead of the checkers at most, as a stream of jobs.
    fn jobs(self, start: Option<String>) -> impl futures_util::Stream<Item = Job> + Send + 'a {
        let first = PageTag { index: 0, start: Arc::new(start) };
        futures_util::stream::unfold(Some(first), move |tag| async move {
            let tag = tag?;
            if past_margin(self.deadline, self.margin) {
                return Some((vec![Job::Stopped(tag)], None));
            }
            match self.store.scan_due(self.segment, self.total, tag.start.as_deref(), self.page_size, self.cutoff).await
            {
                Ok(page) => {
                    let next = page.next.map(|n| PageTag { index: tag.index + 1, start: Arc::new(Some(n)) });
                    let mut jobs = Vec::with_capacity(page.items.len() + 1);
                    jobs.push(Job::PageRead(page.items.len()));
                    jobs.extend(page.items.into_iter().map(|rec| Job::Check(Box::new(rec), tag.clone())));
                    Some((jobs, next))
                }
                Err(e) => Some((vec![Job::ScanFailed(e)], None)),
            }
        })
        .flat_map(futures_util::stream::iter)
    }
}

/// The results of a segment run as they come in.
#[derive(Default)]
struct Tally {
    report: SegmentReport,
    /// The earliest page with unfinished work: a continuation resumes there, and what was
    /// checked is filtered out by `checked_at`, so nothing is checked twice.
    resume: Option<PageTag>,
    scan_error: Option<Error>,
}

impl Tally {
    fn add(&mut self, done: Done) {
        let r = &mut self.report;
        match done {
            Done::Checked(Checked::Written { changed }) => {
                r.checked += 1;
                r.changed += u64::from(changed);
            }
            Done::Checked(Checked::Superseded) => r.superseded += 1,
            Done::Checked(Checked::Failed) => r.failed += 1,
            Done::PageRead(n) => r.max_page_items = r.max_page_items.max(n),
            Done::Interrupted(tag) => {
                if self.resume.as_ref().is_none_or(|r| tag.index < r.index) {
                    self.resume = Some(tag);
                }
            }
            // The checks already under way finish (and are recorded); then the message fails
            // and SQS retries the segment, whose filter skips what was done.
            Done::ScanFailed(e) => self.scan_error = Some(e),
        }
    }
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
pub async fn run_segment<A: Adapters>(
    app: &AppState<A>,
    settings: &SweepSettings,
    pacer: &Pacer,
    work: SegmentWork,
    deadline: Instant,
) -> Result<SegmentReport, Error> {
    let store: &dyn SweepStore = &*app.store;
    let finch = &app.finch.with_max_retries(0);
    let counters = &Counters::default();
    let gate = &Gate { pacer, store, settings };
    let scan = Scan {
        store,
        segment: i32::try_from(work.segment).map_err(|_| Error::invalid("invalid_segment", "segment out of range"))?,
        total: i32::try_from(work.total)
            .map_err(|_| Error::invalid("invalid_segment", "segment count out of range"))?,
        page_size: settings.page_size,
        cutoff: work.round_started - settings.recheck_after,
        deadline,
        margin: settings.time_margin,
    };
    // Owned items: a borrowed stream item makes the future not `Send` (rust-lang/rust#110338).
    // Boxed: the pipeline's nested future types are otherwise too deep for the compiler's
    // layout computation in the binaries that embed it.
    let mut results: std::pin::Pin<Box<dyn futures_util::Stream<Item = Done> + Send + '_>> = Box::pin(
        scan.jobs(work.start.clone())
            .map(move |job| async move {
                match job {
                    // Past the margin, leave the rest to the continuation.
                    Job::Check(_, tag) if past_margin(scan.deadline, scan.margin) => Done::Interrupted(tag),
                    Job::Check(rec, _) => Done::Checked(check_one(app, store, finch, gate, &rec, counters).await),
                    Job::PageRead(n) => Done::PageRead(n),
                    Job::Stopped(tag) => Done::Interrupted(tag),
                    Job::ScanFailed(e) => Done::ScanFailed(e),
                }
            })
            .buffer_unordered(settings.in_flight),
    );
    let mut tally = Tally::default();
    while let Some(done) = results.next().await {
        tally.add(done);
    }
    if let Some(e) = tally.scan_error {
        return Err(e);
    }
    let mut report = tally.report;
    report.next = tally.resume.map(|tag| SegmentWork { start: (*tag.start).clone(), ..work });
    report.finch_requests = counters.requests.load(Ordering::Relaxed);
    report.rate_limited = counters.rate_limited.load(Ordering::Relaxed);
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
