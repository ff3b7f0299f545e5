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
use time::OffsetDateTime;

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

/// The kinds of record a sync keeps: one company per entity, and per person a directory entry,
/// an individual and an employment (DATA.md §1.2–§1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Company,
    Directory,
    Individual,
    Employment,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [Self::Company, Self::Directory, Self::Individual, Self::Employment];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Company => "company",
            Self::Directory => "directory",
            Self::Individual => "individual",
            Self::Employment => "employment",
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
