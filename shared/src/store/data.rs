//! Synced data at rest: the records table (`RECORDS_TABLE_NAME`), one partition per connection.
//!
//! A second table, not more item kinds in the connections table: the status sweep scans that
//! one (records would multiply its cost by the size of every company), and records need range
//! reads (one entity's directory in order, the feed after a cursor) that a key-only table has
//! not. Under the connection's partition:
//!
//! - `KEY` ([`DataKeyItem`]): the KMS-wrapped data key every record of the connection is sealed
//!   under, the feed's next sequence number, and the run lease. Deleting it shreds the data:
//!   every record becomes unreadable at once, and every write of a run still in flight fails
//!   (each is conditional on it).
//! - `SYNC#<entity>` ([`SyncItem`]): one entity's [`SyncRecord`], and when it is next due.
//! - `R#<kind>#<entity>#<id>` ([`StoredRecord`]): a record, sealed, with its keyed content hash
//!   and the sequence of its last change.
//! - `CH#<seq>` ([`FeedEntry`]): the change feed, in order; ids only (a page of changes is served
//!   with each record's current version).
//! - `SEEN#<run>#<entity>#<page>`: the ids a run's directory page listed, for the removal check
//!   of a run resumed in another invocation; they expire.
//! - `FORGOT#<entity>#<individual_id>`: a person an operator had Perch forget: their records
//!   are never stored again for this connection (see [`crate::flows::people::forget`]).
//!
//! **Atomic changes.** A record and its feed entry are written in one transaction with the
//! advance of the feed's sequence on `KEY` ([`RecordWrites::apply_changes`]), conditional on the
//! run holding the lease. The records are always the sum of the feed; a run that dies leaves
//! whole changes or none; a run whose lease was taken over, or whose connection was
//! disconnected, writes nothing more.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::crypto::records::{ContentHash, WrappedDataKey};
use crate::domain::sync::{ChangeOp, RecordKind, SyncRecord};
use crate::domain::{ConnectionId, EntityId, Error};

/// The `KEY` item: the wrapped data key, the feed's next sequence and the run lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyItem {
    pub wrapped: WrappedDataKey,
    /// The sequence number the next change gets (the first is 1).
    pub next_seq: u64,
    /// The run holding the lease, and until when.
    pub run: Option<String>,
    pub lease_until: Option<OffsetDateTime>,
}

/// Asking for the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// Taken (or still held by the same run): the key item as it is now.
    Taken(DataKeyItem),
    /// Another run holds it until then.
    Held { until: OffsetDateTime },
    /// The connection has no data key yet.
    NoKey,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub kind: RecordKind,
    pub entity: EntityId,
    pub id: String,
    /// `nonce ‖ ciphertext ‖ tag` (see [`crate::crypto::records`]).
    pub sealed: Vec<u8>,
    pub hash: ContentHash,
    /// The sequence of the change that wrote it.
    pub seq: u64,
}

/// A stored record's identity and hash: what change detection compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHash {
    pub kind: RecordKind,
    pub id: String,
    pub hash: ContentHash,
}

/// One change to apply: a new or changed record (`sealed` and `hash`), or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    pub kind: RecordKind,
    pub entity: EntityId,
    pub id: String,
    pub op: ChangeOp,
    /// `None` for a removal.
    pub content: Option<(Vec<u8>, ContentHash)>,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: u64,
    pub kind: RecordKind,
    pub entity: EntityId,
    pub id: String,
    pub op: ChangeOp,
    pub at: OffsetDateTime,
}

/// One entity's sync state as stored; `version` is what a write is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncItem {
    pub entity: EntityId,
    pub record: SyncRecord,
    pub version: u64,
}

/// The most changes one [`RecordWrites::apply_changes`] takes: DynamoDB's transaction holds 100
/// items, and each change is two (the record, its feed entry) beside the key's.
pub const MAX_CHANGES_PER_WRITE: usize = 49;

/// The data key and the run lease (`KEY`).
#[async_trait]
pub trait DataKeyItems: Send + Sync {
    async fn read_key(&self, connection: &ConnectionId) -> Result<Option<DataKeyItem>, Error>;

    /// Stores a new data key with the lease held by `run`, only if the connection has none
    /// and is live in the connections table (not being disconnected, not a tombstone) — in one
    /// transaction, so a disconnect that started first is never followed by a new key.
    /// `Ok(false)` when either condition failed.
    async fn create_key(
        &self,
        connection: &ConnectionId,
        wrapped: &WrappedDataKey,
        run: &str,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Takes the lease for `run` until `until` if it is free, expired at `now`, or already
    /// `run`'s.
    async fn take_lease(
        &self,
        connection: &ConnectionId,
        run: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, Error>;

    /// Frees `run`'s lease (nothing if another run holds it now).
    async fn release_lease(&self, connection: &ConnectionId, run: &str) -> Result<(), Error>;
}

/// A run's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The lease is not this run's any more, the key is gone (disconnected), or `next_seq`
    /// moved: nothing was written.
    LeaseLost,
}

/// Records and the feed, written together.
#[async_trait]
pub trait RecordWrites: Send + Sync {
    /// Writes up to [`MAX_CHANGES_PER_WRITE`] changes, numbered from `first_seq`, with their feed
    /// entries, and moves the key's `next_seq` past them — all or nothing, conditional on `run`
    /// holding the lease and `next_seq` being `first_seq`.
    async fn apply_changes(
        &self,
        connection: &ConnectionId,
        run: &str,
        first_seq: u64,
        changes: &[RecordChange],
        at: OffsetDateTime,
    ) -> Result<Applied, Error>;

    /// Keeps the ids one directory page listed (for a resumed run's removal check).
    async fn save_seen(
        &self,
        connection: &ConnectionId,
        run: &str,
        entity: &EntityId,
        page: u32,
        ids: &[String],
    ) -> Result<(), Error>;

    /// Every id a run's pages listed for `entity`.
    async fn load_seen(&self, connection: &ConnectionId, run: &str, entity: &EntityId) -> Result<Vec<String>, Error>;

    /// Marks `individual` of `entity` forgotten: a sync stores nothing of them again.
    async fn forget_individual(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        individual: &str,
    ) -> Result<(), Error>;
}

/// Reading records: change detection (hashes), the views (sealed records), the feed.
#[async_trait]
pub trait RecordReads: Send + Sync {
    /// One page of the hashes of `kind` for `entity` whose ids start with `prefix` (`""`: all),
    /// from `start` (an id); the next start.
    async fn record_hashes(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        prefix: &str,
        start: Option<&str>,
    ) -> Result<(Vec<StoredHash>, Option<String>), Error>;

    /// Up to `limit` records of `kind` for `entity` whose ids start with `prefix`, in id order,
    /// after `after` (an id).
    async fn entity_records(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error>;

    /// Up to `limit` records of `kind`, every entity, in key order (entity, then id), after
    /// `after` (an `(entity, id)` a previous page ended on).
    async fn records_page(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        after: Option<(&EntityId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error>;

    /// The records named, those that exist, in any order.
    async fn records(
        &self,
        connection: &ConnectionId,
        keys: &[(RecordKind, EntityId, String)],
    ) -> Result<Vec<StoredRecord>, Error>;

    /// Up to `limit` feed entries after sequence `after`, in order.
    async fn feed(&self, connection: &ConnectionId, after: u64, limit: usize) -> Result<Vec<FeedEntry>, Error>;

    /// The individuals of `entity` an operator had Perch forget.
    async fn forgotten(&self, connection: &ConnectionId, entity: &EntityId) -> Result<Vec<String>, Error>;
}

/// Sync states (`SYNC#<entity>`).
#[async_trait]
pub trait SyncStates: Send + Sync {
    /// Every entity's state, in entity order.
    async fn sync_states(&self, connection: &ConnectionId) -> Result<Vec<SyncItem>, Error>;

    /// Writes `record` for `entity` if its version is still `expected` (`0` creates it);
    /// `Ok(false)` if another write came first. The item carries `next_attempt_at` for the
    /// schedule ([`DueSyncs`]).
    async fn write_sync(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        record: &SyncRecord,
        expected: u64,
    ) -> Result<bool, Error>;
}

/// A sync that is due: the schedule's find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub connection: ConnectionId,
    pub item: SyncItem,
}

/// What the schedule reads: entities whose next attempt is due.
#[async_trait]
pub trait DueSyncs: Send + Sync {
    /// Up to `limit` entities due by `now`, earliest first, from `start` (a previous answer's
    /// continuation).
    async fn due_syncs(
        &self,
        now: OffsetDateTime,
        start: Option<&str>,
        limit: i32,
    ) -> Result<(Vec<Due>, Option<String>), Error>;
}

/// Disconnect's part: shred, then delete.
#[async_trait]
pub trait PurgeData: Send + Sync {
    /// Deletes the data key: every record of the connection is unreadable from now on, and no
    /// run can write again. `Ok(true)` if there was one.
    async fn shred_key(&self, connection: &ConnectionId) -> Result<bool, Error>;

    /// Deletes up to `limit` of the connection's items; `Ok(true)` when none is left.
    async fn purge_some(&self, connection: &ConnectionId, limit: usize) -> Result<bool, Error>;
}
