//! What Perch keeps, and the narrow traits through which each flow keeps it.
//!
//! Seven kinds of record: a connection with its KMS-encrypted token (until disconnected, then a
//! tombstone), the claim of a Finch `customer_id` by a customer (forever), the claim of an
//! employer — customer, provider, Finch company, entity set — by its one connection (until
//! that connection is disconnected), a pending Connect flow under its state id (single use,
//! expires), the marker of a code exchange (single use, expires), the id of a webhook event
//! already handled (expires), and a status Finch pushed for a connection whose first callback
//! has not stored it yet (expires).
//!
//! **The traits mirror the IAM split.** Each function's role in `template.yaml` allows exactly
//! the DynamoDB actions its code makes; each flow reaches the store through the one trait that
//! lists those operations ([`SessionStore`] for create-session, [`CallbackStore`] for the
//! callback, …), so a flow that calls something its function may not do does not compile.
//! Those are compositions of small traits, one per item kind and action ([`ReadConnection`],
//! [`IssueState`], [`CodeExchanges`], …), which is also how the adapters are split.
//! [`Store`] is all of them: what an adapter implements.
//!
//! Two adapters: DynamoDB ([`crate::aws::dynamodb`]) for the real thing, and memory
//! ([`crate::memory::MemoryStore`]) for the fast in-process tests and nothing else. Both honour
//! the same conditions — versions, expiry, ownership — and the stack tests hold the DynamoDB
//! one to what the in-process tests prove of the flows.
//!
//! **Races.** Every write that can race is conditional: a state is consumed at most once, a
//! code exchange is started at most once, and a connection is created only if absent or
//! replaced only at the `version` it was read at. A lost race is reported, never silently
//! applied.

pub mod data;
pub mod people;
mod records;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use records::{
    ConnectionRecord, ConnectionSummary, Employer, EntityRecord, EntitySummary, ExchangeStart, Observation, Page,
    ParkedStatus, PendingFlow, Pushed, SaveOutcome, ScanPage, employer_key,
};

use crate::crypto::EncryptedToken;
use crate::domain::{
    CodeHash, ConnectionId, ConnectionStatus, CustomerId, EntityId, Error, EventId, FinchCustomerId, FlowMode, StateId,
};

// --- Connections (`CONN#`) --------------------------------------------------------------

/// Reads one connection, strongly consistent (`GetItem`): every flow that acts on one.
#[async_trait]
pub trait ReadConnection: Send + Sync {
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, Error>;
}

/// One page of a customer's connections, oldest first (`Query` on the `by_customer` index).
#[async_trait]
pub trait ListConnections: Send + Sync {
    /// `cursor` is one a previous page returned; one that is not is an `invalid_cursor` 400.
    async fn list_connections(&self, customer: &CustomerId, limit: i32, cursor: Option<&str>) -> Result<Page, Error>;
}

/// Stores a connection with its token at the end of a Connect flow.
#[async_trait]
pub trait SaveConnection: Send + Sync {
    /// Creates the connection, or — when it exists for the same customer at `expected_version`
    /// — replaces it (a reauthentication's new token), marking the code exchange done in the
    /// same transaction. The old ciphertext is overwritten only when the whole write commits.
    /// `expected_version` is `None` to create; a lost race is a `connection_changed` conflict
    /// the caller re-reads after.
    ///
    /// A created connection with an [`ConnectionRecord::employer_key`] claims it in the same
    /// transaction: if another connection holds the claim, nothing is written and the answer
    /// is [`SaveOutcome::ClaimedBy`] — unless that holder is `take_claim_from` (one the caller
    /// found gone), whose claim is then taken over.
    async fn save_connection(
        &self,
        record: &ConnectionRecord,
        expected_version: Option<u64>,
        code: Option<&CodeHash>,
        take_claim_from: Option<&ConnectionId>,
    ) -> Result<SaveOutcome, Error>;
}

/// The two writes of a disconnect.
#[async_trait]
pub trait DisconnectSteps: Send + Sync {
    /// First step: marks the connection `disconnecting` (from `expected_version`) and takes
    /// the disconnect for this call until `lease_until`. `Ok(false)` if it changed meanwhile
    /// (another call may hold it).
    async fn mark_disconnecting(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Gives the disconnect up after a failure, so that a retry takes it at once.
    async fn release_disconnect(&self, id: &ConnectionId) -> Result<(), Error>;

    /// Last step: destroys the ciphertext and leaves a tombstone (id, customer, provider, times,
    /// last Finch-Request-Id, and `note` when Finch could not be told) outside the customer's
    /// listing, and frees the employer claim the connection held. `Ok(false)` if the connection
    /// is not `disconnecting` (another call finished first).
    async fn tombstone(&self, id: &ConnectionId, request_id: Option<&str>, note: Option<&str>) -> Result<bool, Error>;

    /// Marks one entity disconnected (Finch's `/disconnect-entity` succeeded), unless the
    /// connection is being disconnected or gone or the entity is already disconnected; the
    /// record as it is after, or `None` when nothing was written.
    async fn disconnect_entity(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        request_id: Option<&str>,
    ) -> Result<Option<ConnectionRecord>, Error>;
}

/// Applies a status Finch pushed (a webhook).
#[async_trait]
pub trait ApplyPushedStatus: Send + Sync {
    /// Applies `status` if it is newer than what is stored. Finch's timestamps are whole
    /// seconds, so an event stands for the end of its second: it wins over anything observed
    /// within that second.
    async fn apply_pushed_status(
        &self,
        id: &ConnectionId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
        event: &EventId,
    ) -> Result<Pushed, Error>;
}

/// Applies a status Finch pushed for one entity of a connection.
#[async_trait]
pub trait ApplyPushedEntityStatus: Send + Sync {
    /// As [`ApplyPushedStatus::apply_pushed_status`], for the entity only;
    /// [`Pushed::NoSuchEntity`] when the connection does not list it.
    async fn apply_pushed_entity_status(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
    ) -> Result<Pushed, Error>;
}

/// Asks the sweep to read a connection's company and entities again.
#[async_trait]
pub trait RequestRefresh: Send + Sync {
    /// `Ok(false)` when Perch holds no such live connection.
    async fn request_refresh(&self, id: &ConnectionId, at: OffsetDateTime) -> Result<bool, Error>;
}

/// The instant a pushed status stands for: the last of its whole second (see
/// [`ApplyPushedStatus`]).
pub fn pushed_instant(observed_at: OffsetDateTime) -> OffsetDateTime {
    observed_at.replace_nanosecond(0).unwrap_or(observed_at) + time::Duration::milliseconds(999)
}

// --- Parked statuses (`PUSH#`) ----------------------------------------------------------

/// Parks a status pushed for a connection Perch does not hold yet.
#[async_trait]
pub trait ParkStatus: Send + Sync {
    /// Keeps `parked` for the connection unless a later one is parked already.
    async fn park_status(&self, id: &ConnectionId, parked: &ParkedStatus) -> Result<(), Error>;
}

/// Takes a parked status once the connection is stored.
#[async_trait]
pub trait TakeParkedStatus: Send + Sync {
    async fn take_parked_status(&self, id: &ConnectionId) -> Result<Option<ParkedStatus>, Error>;
}

/// The status sweep's reads and writes.
#[async_trait]
pub trait CheckConnections: Send + Sync {
    /// One page of one parallel-scan segment: live connections neither checked nor updated
    /// since `cutoff`. Memory is bounded by `limit`, whatever the table size.
    async fn scan_due(
        &self,
        segment: i32,
        total_segments: i32,
        start: Option<&str>,
        limit: i32,
        cutoff: OffsetDateTime,
    ) -> Result<ScanPage, Error>;

    /// Records a status check, unless the connection changed since it was read at
    /// `expected_version` (a webhook, a reauthentication or a disconnect got there first: their
    /// data is newer). `Ok(false)` when the write was refused for that reason.
    async fn record_check(&self, id: &ConnectionId, expected_version: u64, obs: &Observation) -> Result<bool, Error>;
}

/// Moving ciphertexts to another key (`perch-admin reencrypt`).
#[async_trait]
pub trait ReplaceTokens: Send + Sync {
    /// One page of every connection that still holds a ciphertext under a key other than `key_arn`.
    async fn scan_tokens_not_under(&self, key_arn: &str, start: Option<&str>, limit: i32) -> Result<ScanPage, Error>;

    /// Replaces a connection's ciphertext at `expected_version`. `Ok(false)` if the connection
    /// changed meanwhile or has no token any more.
    async fn replace_token(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        token: &EncryptedToken,
    ) -> Result<bool, Error>;
}

// --- Finch customer-id claims (`FCUST#`) ------------------------------------------------

/// Claims a Finch `customer_id` before it is ever sent to Finch.
#[async_trait]
pub trait ClaimFinchCustomer: Send + Sync {
    /// `Ok(true)` if `id` is (now or already) `customer`'s, `Ok(false)` if another customer
    /// holds it.
    async fn claim_finch_customer(&self, id: &FinchCustomerId, customer: &CustomerId, slot: u32)
    -> Result<bool, Error>;
}

/// Who claimed a Finch `customer_id`.
#[async_trait]
pub trait FinchCustomerOwner: Send + Sync {
    async fn finch_customer_owner(&self, id: &FinchCustomerId) -> Result<Option<CustomerId>, Error>;
}

// --- Pending flows (`STATE#`) -----------------------------------------------------------

/// Stores a pending Connect flow under its state id.
#[async_trait]
pub trait IssueState: Send + Sync {
    async fn put_state(&self, state: &StateId, flow: &PendingFlow) -> Result<(), Error>;
}

/// The refusal of a reauthentication session for a connection being disconnected.
pub fn disconnecting_conflict() -> Error {
    Error::conflict("connection_disconnecting", "This connection is being disconnected.")
}

/// Consumes a pending Connect flow.
#[async_trait]
pub trait ConsumeState: Send + Sync {
    /// Returns the state's flow exactly once, and never after it expired. A state of another
    /// flow type, or (with `owner`) of another customer, is left untouched and reported as
    /// absent: the condition is part of the consuming write.
    async fn take_state(
        &self,
        state: &StateId,
        now: OffsetDateTime,
        mode: FlowMode,
        owner: Option<&CustomerId>,
    ) -> Result<Option<PendingFlow>, Error>;
}

// --- Code exchanges (`CODE#`) -----------------------------------------------------------

/// The single-use marker of a code exchange (finished by [`SaveConnection::save_connection`]).
#[async_trait]
pub trait CodeExchanges: Send + Sync {
    /// Marks a code exchange as started, unless this code was seen before.
    async fn begin_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        now: OffsetDateTime,
    ) -> Result<ExchangeStart, Error>;

    /// Forgets a started exchange that produced nothing: its request provably never reached
    /// Finch, or Finch refused the code for good. A finished exchange is left alone.
    async fn abandon_exchange(&self, code: &CodeHash) -> Result<(), Error>;

    /// Finishes a started exchange whose connection was not stored because `connection`
    /// already stands for the same employer: a replay answers with that one.
    async fn finish_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        connection: &ConnectionId,
    ) -> Result<(), Error>;
}

// --- Webhook event ids (`EVENT#`) -------------------------------------------------------

/// De-duplication of webhook deliveries.
#[async_trait]
pub trait EventIds: Send + Sync {
    /// Remembers an event id for `ttl`; `Ok(false)` if it was seen before (a redelivery).
    async fn mark_event(&self, id: &EventId, ttl: time::Duration) -> Result<bool, Error>;

    /// Forgets an event id, so that Finch's redelivery is processed (after a failure).
    async fn unmark_event(&self, id: &EventId) -> Result<(), Error>;
}

// --- Finch's rate windows (`BUDGET#<window>`) -------------------------------------------

/// One of Finch's rate windows as stored: what was taken, by second, and for how long Finch
/// refused (see [`crate::flows::budget`]). `version` is what a write is conditional on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowLog {
    pub version: u64,
    /// `(unix second, requests taken in it)`, oldest first.
    pub taken: Vec<(i64, u32)>,
    /// Unix second until which Finch refused (its 429 for this window).
    pub blocked_until: Option<i64>,
}

/// Finch's rate windows, shared by every invocation that calls Finch.
#[async_trait]
pub trait BudgetWindows: Send + Sync {
    /// Reads windows by name, strongly consistent (a window never used reads as the default).
    async fn read_windows(&self, names: &[&str]) -> Result<Vec<WindowLog>, Error>;

    /// Writes every `(name, log)` at once if each is still at the version it was read at
    /// (`log.version - 1`); `Ok(false)` when another invocation wrote first, and nothing was
    /// written.
    async fn write_windows(&self, windows: &[(&str, &WindowLog)]) -> Result<bool, Error>;
}

// --- What each function may do ----------------------------------------------------------

macro_rules! function_store {
    ($(#[$doc:meta])* $name:ident: $($part:path),+) => {
        $(#[$doc])*
        pub trait $name: $($part +)+ {}
        impl<T: $($part +)+ ?Sized> $name for T {}
    };
}

function_store!(
    /// create-connect-session: claims, its connections, states.
    SessionStore: ReadConnection, ListConnections, IssueState, ClaimFinchCustomer
);
function_store!(
    /// create-reauth-session: the connection, states.
    ReauthStore: ReadConnection, IssueState
);
function_store!(
    /// oauth-callback: consumes the state, guards the code, stores the connection (and applies
    /// a status Finch pushed meanwhile), and marks its first sync due.
    CallbackStore: ReadConnection, ConsumeState, FinchCustomerOwner, CodeExchanges, SaveConnection,
        TakeParkedStatus, ApplyPushedStatus, data::SyncStates
);
function_store!(
    /// disconnect: the connection, its two writes, and the shredding of its synced data.
    DisconnectStore: ReadConnection, DisconnectSteps, data::PurgeData
);
function_store!(
    /// finch-webhook: event ids, pushed statuses (parked when the connection is not stored yet),
    /// whether a connection is held (a data event queues its sync),
    /// refresh requests.
    WebhookStore: EventIds, ApplyPushedStatus, ApplyPushedEntityStatus, ParkStatus, RequestRefresh, ReadConnection
);
function_store!(
    /// check-connection-status: scans and checks, and Finch's windows it shares with the sync.
    SweepStore: CheckConnections, BudgetWindows
);
function_store!(
    /// sync-worker: the connection (and its status on a 401), the budget, and the records
    /// table: key and lease, records and feed, states, the schedule, the purge.
    SyncWorkerStore: ReadConnection, CheckConnections, BudgetWindows, data::DataKeyItems, data::RecordWrites,
        data::RecordReads, data::SyncStates, data::DueSyncs, data::PurgeData, people::IndexStore
);
function_store!(
    /// connection-data: the connection (ownership), its key, states, records and feed, and
    /// the customer's people.
    DataReadStore: ReadConnection, data::DataKeyItems, data::RecordReads, data::SyncStates, people::PersonIndex
);
function_store!(
    /// Every operation: what an adapter implements and [`crate::app::AppState`] holds.
    Store: SessionStore, ReauthStore, CallbackStore, DisconnectStore, WebhookStore, SweepStore, ReplaceTokens,
        BudgetWindows, SyncWorkerStore, DataReadStore
);
