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
