//! A connection's data sync, per entity: where it stands and when to try again
//! (`../shared/finch/DATA.md` §1.1, §3.2, §7.2).
//!
//! Finch has no data for a new connection for hours, or for days when the connection is
//! assisted (a first-sync SLA of 14 days), and it says why in its 202 ([`WaitReason`]). Each
//! reason is a different wait: telling the app which is the point of keeping them apart.
//! After the first sync Finch refreshes every 24 hours (automated) or 7 days (assisted);
//! asking more often returns the same snapshot ([`refresh_interval`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Why Finch has no data yet (its 202's `finch_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Finch is fetching the data (its first sync, or a live fetch that takes long).
    DataSyncInProgress,
    /// The employer has not finished authorizing (assisted connections).
    Pending,
    /// Finch is setting up its accountant user at the provider (assisted connections).
    AccountantSetupPending,
    /// A reason Finch added since: kept as given, not guessed at.
    #[serde(untagged)]
    Other(String),
}

impl WaitReason {
    /// From Finch's `finch_code`.
    pub fn from_code(code: Option<&str>) -> Self {
        match code {
            Some("data_sync_in_progress") => Self::DataSyncInProgress,
            Some("pending") => Self::Pending,
            Some("accountant_setup_pending") => Self::AccountantSetupPending,
            other => Self::Other(other.unwrap_or("unknown").to_owned()),
        }
    }

    /// Finch's `finch_code` for it.
    pub fn code(&self) -> &str {
        match self {
            Self::DataSyncInProgress => "data_sync_in_progress",
            Self::Pending => "pending",
            Self::AccountantSetupPending => "accountant_setup_pending",
            Self::Other(code) => code,
        }
    }
}

/// What kind of wait a retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Finch answered 202: its data is on the way.
    NotReady,
    /// A run failed (Finch 5xx, a timeout, an AWS outage): Finch's advice for its 500s is to
    /// come back in a few hours, not at once.
    Failed,
}

/// How long to wait before attempt `attempts + 1`: doubling from 5 minutes (202) or 15 minutes
/// (a failure), never more than 6 hours apart. A 14-day assisted first sync is then ~60
/// attempts, a connection waiting a week ~30: a few Finch calls a day at most. The scheduler
/// adds jitter, so connections made together do not retry together.
pub fn retry_delay(kind: Retry, attempts: u32) -> Duration {
    let base = match kind {
        Retry::NotReady => 5 * 60,
        Retry::Failed => 15 * 60,
    };
    let secs = base * 2u64.saturating_pow(attempts.min(16));
    Duration::from_secs(secs.min(6 * 3600))
}

/// How often Finch itself refreshes a connection's data: asking more often returns the same
/// snapshot.
pub fn refresh_interval(assisted: bool) -> Duration {
    Duration::from_secs(if assisted { 7 * 24 * 3600 } else { 24 * 3600 })
}

/// The kinds of record a sync keeps: one company per entity, per person a directory entry,
/// an individual and an employment (DATA.md §1.2–§1.5), and the entity's pay: its payments and
/// their pay statements (§1.6–§1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Company,
    Directory,
    Individual,
    Employment,
    /// Id `<pay_date>.<payment_id>`: a range of ids is a range of pay dates.
    Payment,
    /// Id `<payment_id>.<individual_id>`: one payment's statements are one range.
    PayStatement,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] =
        [Self::Company, Self::Directory, Self::Individual, Self::Employment, Self::Payment, Self::PayStatement];
    /// What the organization pass keeps (and compares, whole, each run).
    pub const ORGANIZATION: [RecordKind; 4] = [Self::Company, Self::Directory, Self::Individual, Self::Employment];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Company => "company",
            Self::Directory => "directory",
            Self::Individual => "individual",
            Self::Employment => "employment",
            Self::Payment => "payment",
            Self::PayStatement => "pay_statement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The Finch product whose scope reads this kind.
    pub fn product(self) -> &'static str {
        self.as_str()
    }
}

/// A payment's record id: its pay date, then Finch's id.
pub fn payment_record_id(pay_date: Date, payment_id: &str) -> String {
    format!("{pay_date}.{payment_id}")
}

/// The Finch payment id in a payment's record id.
pub fn payment_id_of(record_id: &str) -> &str {
    record_id.split_once('.').map_or(record_id, |(_, id)| id)
}

/// A pay statement's record id: the payment, then the person (`n` > 1 for a person's second
/// statement on one payment, which providers send for corrections).
pub fn statement_record_id(payment_id: &str, individual_id: &str, n: u32) -> String {
    if n > 1 { format!("{payment_id}.{individual_id}.{n}") } else { format!("{payment_id}.{individual_id}") }
}

/// What a change did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Added,
    Updated,
    Removed,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Updated => "updated",
            Self::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Added, Self::Updated, Self::Removed].into_iter().find(|o| o.as_str() == s)
    }
}

/// Where one entity's sync stands, as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncStatus {
    /// Never synced, never asked for (a connection made before Perch synced data).
    NotStarted,
    /// Asked for (a new connection, a webhook, the app): a worker has not started yet.
    Queued,
    /// Finch has no data yet, and says why.
    WaitingForFinch {
        reason: WaitReason,
    },
    Syncing,
    /// The last pass completed: the records are Finch's latest snapshot.
    Current,
    /// Finch refused the token (401): the employer must reconnect; nothing syncs until then.
    NeedsReauth,
    /// Finch refused one or more products (403) or they were never granted; the rest synced.
    MissingScope {
        products: Vec<String>,
    },
    /// The last run failed; retried later. `reason` is a code, never data.
    Error {
        reason: String,
    },
}

impl SyncStatus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Queued => "queued",
            Self::WaitingForFinch { .. } => "waiting_for_finch",
            Self::Syncing => "syncing",
            Self::Current => "current",
            Self::NeedsReauth => "needs_reauth",
            Self::MissingScope { .. } => "missing_scope",
            Self::Error { .. } => "error",
        }
    }
}

/// Records a pass added, changed and removed, and those it found unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
}

impl Counts {
    pub fn count(&mut self, op: Option<ChangeOp>) {
        match op {
            Some(ChangeOp::Added) => self.added += 1,
            Some(ChangeOp::Updated) => self.updated += 1,
            Some(ChangeOp::Removed) => self.removed += 1,
            None => self.unchanged += 1,
        }
    }

    pub fn changed(&self) -> u64 {
        self.added + self.updated + self.removed
    }
}

/// A run in progress for one entity: where to resume after Lambda's deadline cut it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub company_done: bool,
    /// The directory offset the next page starts at.
    pub directory_offset: u64,
    /// Directory pages done (each one's ids are kept for the removal check).
    pub pages: u32,
    pub counts: Counts,
    /// Finch's request ids of the run's calls, for support (the last few).
    pub finch_request_ids: Vec<String>,
    pub data_retrieved: Option<String>,
    /// Products Finch refused in this run.
    pub missing: Vec<String>,
    /// Kinds whose pass cannot be complete (a refused product, an item Finch could not
    /// answer): their records are never removed by this run.
    pub incomplete: Vec<RecordKind>,
}

/// The last run that completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSuccess {
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// `Finch-Data-Retrieved`: when Finch read this snapshot from the provider.
    pub data_retrieved: Option<String>,
    pub finch_request_ids: Vec<String>,
    pub counts: Counts,
    /// `/introspect`'s `last_successful_sync` when the run started: the same value later means
    /// Finch has nothing newer to pull.
    pub snapshot: Option<String>,
}

// Dates as Finch writes them (`2025-01-15`), in the stored state and in the API.
time::serde::format_description!(pub iso_date, Date, "[year]-[month]-[day]");

/// Where an entity's pay history stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PayState {
    /// Payments are being listed, or statements fetched.
    Backfilling,
    /// Every payment listed has its statements (but those Finch is still fetching: `waiting`).
    Current,
    /// Finch answered the payments with a 202.
    WaitingForFinch { reason: WaitReason },
    /// The `payment` or `pay_statement` product was not granted, or refused.
    MissingScope { products: Vec<String> },
    /// The last pass failed; retried later. `reason` is a code.
    Error { reason: String },
}

/// A listing of payments in progress: windows of pay dates, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The last day of the next window.
    #[serde(with = "iso_date")]
    pub next_end: Date,
    /// The earliest day the listing reaches.
    #[serde(with = "iso_date")]
    pub stop: Date,
    /// The day the listing started (what it is current as of, once done).
    #[serde(with = "iso_date")]
    pub as_of: Date,
}

/// A payment whose statements are not all stored yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPayment {
    /// Finch's payment id.
    pub id: String,
    #[serde(with = "iso_date")]
    pub pay_date: Date,
    /// The next statement offset (statements before it are stored).
    pub offset: u64,
    /// How many statements it has: the people the payment names, then Finch's `paging.count`.
    #[serde(default)]
    pub expected: Option<u64>,
    /// Its statements were stored before (the payment changed, or a webhook said they did):
    /// compare, and remove those no longer listed.
    pub refetch: bool,
    pub attempts: u32,
    /// Finch was still fetching its statements (or could not answer): not asked before then.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
    /// Why it waits: Finch's `finch_code`, or a reason code.
    #[serde(default)]
    pub waiting: Option<String>,
}

/// One entity's pay history: how far the backfill came, what is left (ids and dates only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaySync {
    #[serde(flatten)]
    pub state: PayState,
    /// The earliest pay date synced: Finch's lookback, January 1st two years back by default.
    #[serde(with = "iso_date")]
    pub from: Date,
    /// Payments are listed from here (when it is `from`, the backfill is listed)…
    #[serde(default, with = "iso_date::option")]
    pub listed_from: Option<Date>,
    /// …through here.
    #[serde(default, with = "iso_date::option")]
    pub listed_through: Option<Date>,
    /// The listing in progress.
    #[serde(default)]
    pub listing: Option<Listing>,
    /// Days of pay dates per `/employer/payment` call, fitted to the size of the answers.
    pub window_days: u32,
    /// Payments stored, and those whose statements are all stored.
    pub payments: u32,
    pub payments_done: u32,
    /// Statements stored.
    pub statements: u64,
    /// The payments whose statements are next, newest first.
    #[serde(default)]
    pub pending: Vec<PendingPayment>,
    /// Failed or waiting passes since the last one that completed (the backoff's exponent).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
}

impl PaySync {
    pub fn new(from: Date, window_days: u32) -> Self {
        Self {
            state: PayState::Backfilling,
            from,
            listed_from: None,
            listed_through: None,
            listing: None,
            window_days,
            payments: 0,
            payments_done: 0,
            statements: 0,
            pending: Vec::new(),
            attempts: 0,
            last_success: None,
        }
    }

    /// Whether every payment back to `from` was listed once.
    pub fn backfill_listed(&self) -> bool {
        self.listed_from.is_some_and(|f| f <= self.from)
    }

    /// The earliest time a pending payment may be asked for again (`None`: one may be now).
    pub fn next_retry(&self) -> Option<OffsetDateTime> {
        if self.pending.iter().any(|p| p.retry_at.is_none()) {
            return None;
        }
        self.pending.iter().filter_map(|p| p.retry_at).min()
    }
}

/// One entity's sync, as stored (no personal data: states, times, counts and ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub status: SyncStatus,
    /// Attempts since the last success (the backoff's exponent).
    pub attempts: u32,
    /// When the next run is due (a retry, or the next refresh); the schedule reads it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When a run was last asked for; cleared when a run starts.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub requested_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub run: Option<Checkpoint>,
    #[serde(default)]
    pub last_success: Option<LastSuccess>,
    /// The pay history (when the `payment` and `pay_statement` products are granted).
    #[serde(default)]
    pub pay: Option<PaySync>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl SyncRecord {
    pub fn queued(at: OffsetDateTime) -> Self {
        Self {
            status: SyncStatus::Queued,
            attempts: 0,
            next_attempt_at: Some(at),
            requested_at: Some(at),
            run: None,
            last_success: None,
            pay: None,
            updated_at: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finchs_reasons_round_trip_and_new_ones_are_kept() {
        for code in ["data_sync_in_progress", "pending", "accountant_setup_pending", "provider_reconnecting"] {
            assert_eq!(WaitReason::from_code(Some(code)).code(), code);
        }
        assert_eq!(WaitReason::from_code(None).code(), "unknown");
        let json = serde_json::to_string(&WaitReason::AccountantSetupPending).unwrap();
        assert_eq!(json, "\"accountant_setup_pending\"");
        assert_eq!(serde_json::from_str::<WaitReason>("\"brand_new\"").unwrap(), WaitReason::Other("brand_new".into()));
    }

    #[test]
    fn retries_double_from_their_base_up_to_six_hours() {
        assert_eq!(retry_delay(Retry::NotReady, 0), Duration::from_secs(300));
        assert_eq!(retry_delay(Retry::NotReady, 1), Duration::from_secs(600));
        assert_eq!(retry_delay(Retry::Failed, 0), Duration::from_secs(900));
        assert_eq!(retry_delay(Retry::Failed, 40), Duration::from_secs(6 * 3600));
        // An assisted connection's 14-day first sync costs a few calls a day, not hundreds.
        let (mut waited, mut attempts) = (Duration::ZERO, 0);
        while waited < Duration::from_secs(14 * 24 * 3600) {
            waited += retry_delay(Retry::NotReady, attempts);
            attempts += 1;
        }
        assert!((50..70).contains(&attempts), "{attempts}");
        assert_eq!(refresh_interval(false), Duration::from_secs(86_400));
        assert_eq!(refresh_interval(true), Duration::from_secs(7 * 86_400));
    }
}
