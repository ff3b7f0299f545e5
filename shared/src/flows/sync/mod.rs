//! Perch Sync: the employer's organization data in Perch's store, kept current within Finch's
//! limits, and served to the app as a change feed and a joined view.
//!
//! **Never a pass-through** (DATA.md §7.1). Finch allows the whole application 20 requests a
//! minute per product, answers 202 for hours or days after a connection is made, and refreshes
//! its own copy once a day at most; API Gateway cuts at 30 s. So the app reads Perch's store,
//! and sync workers (SQS-fed Lambda invocations) fill it: [`run`].
//!
//! **A run** is one connection, entity by entity (`entity_ids` takes one value): the company,
//! then the directory page by page (`limit` up to 10,000, following `paging.count`), and for
//! each page one `/employer/individual` and one `/employment` batch of the page's ids (the cap
//! is 10,000 ids, the page's size). Each record is canonicalised, hashed under the
//! connection's key, compared to the stored hash, and written only if it changed: one
//! transaction holds a record and its feed entry ([`crate::store::data`]). After the last page
//! a *complete* pass removes what the directory no longer lists; a partial, failed or refused
//! one removes nothing. Near the Lambda deadline the run saves a checkpoint (the next offset;
//! each page's ids are kept) and hands the rest back to the queue: memory is one page and the
//! hashes of one entity, whatever the company's size.
//!
//! **What stops a run**, and the state it leaves ([`SyncStatus`]): Finch's 202 (waiting, its
//! reason kept, retried with backoff across a 14-day first sync); a 401 (needs reauth, and the
//! connection's own status with its event); a 403 for one product (missing scope for that
//! product, the rest syncs); a 429 (the budget's window is blocked until it rolls, the run
//! resumes after); anything else (error, with a reason code, retried later, resuming from the
//! checkpoint). The previous records stay readable throughout.
//!
//! **One budget.** Every Finch request first takes one from its product's window and the IP's
//! ([`crate::flows::budget`]). First syncs (no previous success) use the reserve; refreshes do
//! not.
//!
//! **Triggers** ([`SyncWork`]): a new or re-authenticated connection, the schedule
//! ([`plan_due`]: each entity's `next_attempt_at` — a retry, or Finch's next refresh, daily or
//! weekly — read from a sparse index), Finch's data webhooks, and the app's
//! `POST /connections/{id}/sync`. A scheduled refresh whose `/introspect`
//! `last_successful_sync` (kept on the connection by the status sweep) is the snapshot already
//! pulled costs no Finch request at all.

mod run;
pub mod view;

use std::time::Duration;

use time::OffsetDateTime;

pub use crate::queue::{SyncQueue, SyncWork, Trigger};
pub use run::{RunOutcome, run};

use crate::app::{Adapters, AppState};
use crate::config::Env;
use crate::config::env::ConfigError;
use crate::domain::sync::{SyncRecord, SyncStatus};
use crate::domain::{ConnectionId, EntityId, Error};
use crate::flows::budget::FinchLimits;
use crate::store::ConnectionRecord;
use crate::store::data::{DueSyncs, SyncStates};

/// The sync's settings, from the environment.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `SYNC_DIRECTORY_PAGE` (default and maximum 10,000, Finch's cap): ids per directory page,
    /// and so per individual and employment batch.
    pub page_size: u64,
    /// Finch's windows (`FINCH_PRODUCT_LIMIT`, `FINCH_IP_BUDGET`, …), shared with the sweep.
    pub limits: FinchLimits,
    /// `SYNC_DEADLINE_MARGIN_SECONDS` (default 60): a run checkpoints when less than this is
    /// left before the Lambda deadline (a Finch call may take that long).
    pub deadline_margin: Duration,
    /// `SYNC_QUEUE_URL`: the sync queue (continuations, scheduled work).
    pub queue_url: Option<String>,
    pub pay: PaySettings,
}

/// How the pay history is read (DATA.md §1.6–§1.7, §3.2).
#[derive(Debug, Clone)]
pub struct PaySettings {
    /// `SYNC_PAY_HISTORY_YEARS` (default 2, Finch's lookback): the backfill reaches back to
    /// January 1st this many years before the current one.
    pub history_years: u64,
    /// `SYNC_PAY_REFRESH_DAYS` (default 45): each refresh lists again the payments of this many
    /// days before the last listing, for new payments and late corrections.
    pub refresh_days: u64,
    /// `SYNC_PAY_STATEMENTS_PAGE` (default and maximum 5,000, Finch's cap): statements asked
    /// per payment per request.
    pub statements_page: u64,
    /// `SYNC_PAY_STATEMENTS_PER_REQUEST` (default and maximum 50,000, Finch's caps: ten
    /// payments of 5,000): statements asked per request in all. The answer is read as it
    /// arrives ([`crate::finch::stream`]), so its size is not a worker's memory; a lower figure
    /// only makes more, smaller requests.
    pub statements_per_request: u64,
    /// `SYNC_PAYMENT_LISTING_BYTES` (default 4 MiB): the size `/employer/payment` answers are
    /// fitted to (the endpoint has no paging: a window of pay dates is the only bound).
    pub listing_bytes: u64,
    /// Days of the first listing window, before answers' sizes are known.
    pub first_window_days: u32,
    /// `SYNC_PAY_RETENTION_DAYS` (default: none): pay older than this many days (by pay date)
    /// is deleted at each sync, and never fetched.
    pub retention_days: Option<u64>,
}

impl PaySettings {
    /// The earliest pay date synced on `today`: Finch's lookback, or the retention's cutoff
    /// when that is later.
    pub fn from(&self, today: time::Date) -> time::Date {
        let year = today.year() - i32::try_from(self.history_years).unwrap_or(0);
        let lookback = time::Date::from_calendar_date(year, time::Month::January, 1).unwrap_or(today);
        self.cutoff(today).map_or(lookback, |c| c.max(lookback))
    }

    /// The first pay date kept on `today`, when pay is retained for a limited time.
    pub fn cutoff(&self, today: time::Date) -> Option<time::Date> {
        let days = i64::try_from(self.retention_days?).unwrap_or(i64::MAX / 2);
        Some(today.checked_sub(time::Duration::days(days)).unwrap_or(time::Date::MIN))
    }
}

impl SyncSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok()).inspect_err(ConfigError::log)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        Ok(Self {
            page_size: env.number("SYNC_DIRECTORY_PAGE", 10_000, 1, crate::finch::MAX_DIRECTORY_PAGE)?,
            limits: FinchLimits::from_env(&env)?,
            deadline_margin: Duration::from_secs(env.number("SYNC_DEADLINE_MARGIN_SECONDS", 60, 1, 600)?),
            queue_url: env.optional("SYNC_QUEUE_URL"),
            pay: PaySettings {
                history_years: env.number("SYNC_PAY_HISTORY_YEARS", 2, 0, 25)?,
                refresh_days: env.number("SYNC_PAY_REFRESH_DAYS", 45, 1, 3_660)?,
                statements_page: env.number(
                    "SYNC_PAY_STATEMENTS_PAGE",
                    crate::finch::MAX_STATEMENTS_PER_PAYMENT,
                    1,
                    crate::finch::MAX_STATEMENTS_PER_PAYMENT,
                )?,
                statements_per_request: env.number("SYNC_PAY_STATEMENTS_PER_REQUEST", 50_000, 1, 50_000)?,
                listing_bytes: env.number("SYNC_PAYMENT_LISTING_BYTES", 4 << 20, 64 << 10, 64 << 20)?,
                first_window_days: 31,
                retention_days: env
                    .optional("SYNC_PAY_RETENTION_DAYS")
                    .map(|_| env.number("SYNC_PAY_RETENTION_DAYS", 0, 1, 36_600))
                    .transpose()?,
            },
        })
    }
}

/// Marks every live entity of a new (or re-authenticated) connection queued and due now, so
/// the schedule runs it even if the queue message is lost. Best-effort: the connection is
/// made whatever this does.
pub async fn mark_queued(store: &dyn SyncStates, rec: &ConnectionRecord, now: OffsetDateTime) -> Result<(), Error> {
    let states = store.sync_states(&rec.connection_id).await?;
    for e in rec.live_entities() {
        let (mut record, version) = match states.iter().find(|s| s.entity == e.id) {
            Some(s) => (s.record.clone(), s.version),
            None => (SyncRecord::queued(now), 0),
        };
        record.requested_at = Some(now);
        record.next_attempt_at = Some(now);
        record.updated_at = now;
        // A run in progress keeps its state (it runs again when it ends: `requested_at`);
        // anything else is now queued, its last success kept.
        if record.status != SyncStatus::Syncing {
            record.status = SyncStatus::Queued;
        }
        // A lost race means another writer (a worker) holds the newest state: it is due anyway.
        store.write_sync(&rec.connection_id, &e.id, &record, version).await?;
    }
    Ok(())
}

/// After a connection is made or re-authenticated: its entities are marked due now and a run
/// is queued. Best-effort — the connection is made whatever happens here — and a lost message
/// is made up for by the schedule, which finds the entities due.
pub async fn after_connect<A: Adapters>(app: &AppState<A>, store: &dyn SyncStates, rec: &ConnectionRecord) {
    let Some(queue) = &app.sync_queue else { return };
    let now = app.clock.now();
    if let Err(e) = mark_queued(store, rec, now).await {
        tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), "first sync not marked due; the queued run still starts it");
    }
    let work = SyncWork::new(rec.connection_id.clone(), Trigger::Connected);
    if let Err(e) = queue.send(&[work], Duration::ZERO).await {
        tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), "first sync not queued; the schedule starts it");
    }
}

/// A Finch data webhook (`directory.*`, `individual.*`, `employment.*`, `company.updated`,
/// `payment.*`, `pay_statement.*`, `job.initial_data_sync_{org,payroll}.succeeded`) for a
/// connection Perch holds: a run of the entity it names (every entity without one). The ids it
/// carries are a hint only: a run refetches the entity in batches — the same four calls for one
/// changed person as for all — and only a whole pass can tell who left. A payment's id is kept:
/// its statements are read again even if its pay date is older than a refresh looks back.
pub async fn after_webhook<A: Adapters>(
    app: &AppState<A>,
    connection: &ConnectionId,
    entity: Option<&EntityId>,
    payment: Option<&str>,
) -> Result<bool, Error> {
    let Some(queue) = &app.sync_queue else { return Ok(false) };
    let work = SyncWork {
        connection_id: connection.clone(),
        trigger: Trigger::Webhook,
        entities: entity.map(|e| vec![e.clone()]),
        run_id: None,
        payments: payment.map(|p| vec![p.to_owned()]),
    };
    queue.send(&[work], Duration::ZERO).await?;
    Ok(true)
}

/// How long a planned entity is left to its queued run before the schedule sends it again
/// (a run that died, a message lost).
pub const PLANNED_FOR: time::Duration = time::Duration::minutes(30);

/// The schedule's turn: sends every entity due by `now` to the queue, one message per
/// connection, at most `limit` connections, and moves each planned entity's next attempt
/// [`PLANNED_FOR`] ahead so the next turn does not send it again while it waits in the queue
/// (its run sets the real next attempt). The number of connections sent.
pub async fn plan_due<A: Adapters>(
    app: &AppState<A>,
    queue: &dyn SyncQueue,
    now: OffsetDateTime,
    limit: usize,
) -> Result<usize, Error> {
    let store = app.store.as_ref();
    let mut start: Option<String> = None;
    let mut work: Vec<SyncWork> = Vec::new();
    let mut planned = Vec::new();
    loop {
        let (due, next) = DueSyncs::due_syncs(store, now, start.as_deref(), 100).await?;
        for d in due {
            let entity = d.item.entity.clone();
            if let Some(w) = work.iter_mut().find(|w| w.connection_id == d.connection) {
                w.entities.get_or_insert_with(Vec::new).push(entity);
            } else if work.len() < limit {
                work.push(SyncWork {
                    connection_id: d.connection.clone(),
                    trigger: Trigger::Scheduled,
                    entities: Some(vec![entity]),
                    run_id: None,
                    payments: None,
                });
            } else {
                continue;
            }
            planned.push(d);
        }
        start = next;
        if start.is_none() || work.len() >= limit {
            break;
        }
    }
    queue.send(&work, Duration::ZERO).await?;
    for d in planned {
        let mut record = d.item.record;
        record.next_attempt_at = Some(now + PLANNED_FOR);
        // A lost race: a worker wrote a newer state, with its own next attempt.
        SyncStates::write_sync(store, &d.connection, &d.item.entity, &record, d.item.version).await?;
    }
    Ok(work.len())
}
