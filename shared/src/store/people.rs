//! The person index at rest: one partition per customer in the records table (`P#<customer>`),
//! beside the connections' partitions (see [`crate::domain::people`]).
//!
//! - `MKEY`: the customer's match key, wrapped by KMS (see [`crate::crypto::match_keys`]).
//! - `LEASE`: which indexer holds the customer's index, until when. One at a time per
//!   customer, so an indexer reads, decides and writes without racing another connection's.
//! - `CUR#<connection>`: how far into the connection's change feed the index is.
//! - `PER#<person_id>` ([`Person`]): a person's sources, keys and ambiguities.
//! - `SRC#<connection>#<entity>#<individual_id>` ([`SourceLink`]): a source's person and keys.
//! - `MK#<hash>` ([`KeyHolders`]): the people a match key names.
//!
//! Nothing in it is personal data: ids, rules and keyed hashes. It still goes with its
//! connections: a disconnect removes the connection's sources, and the keys only they had.
//!
//! **Writes** ([`IndexWrites`]) are applied in an order that makes a failure half-way harmless:
//! keys, then persons, then sources, then persons removed, then the cursor. Until the cursor
//! moves the indexer reads the same feed entries again, and deciding from a partly written
//! index comes to the same links.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::crypto::records::WrappedDataKey;
use crate::domain::people::{KeyHolders, MatchKey, Person, SourceLink, SourceRef};
use crate::domain::{ConnectionId, CustomerId, Error, PersonId};

/// One indexer's changes, written together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexWrites {
    pub keys: Vec<KeyHolders>,
    pub keys_removed: Vec<MatchKey>,
    pub persons: Vec<Person>,
    pub sources: Vec<SourceLink>,
    pub sources_removed: Vec<SourceRef>,
    pub persons_removed: Vec<PersonId>,
    /// How far into which connection's feed these changes reach.
    pub cursor: Option<(ConnectionId, u64)>,
}

impl IndexWrites {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.keys_removed.is_empty()
            && self.persons.is_empty()
            && self.sources.is_empty()
            && self.sources_removed.is_empty()
            && self.persons_removed.is_empty()
            && self.cursor.is_none()
    }
}

#[async_trait]
pub trait PersonIndex: Send + Sync {
    /// The customer's wrapped match key, if it has one.
    async fn read_match_key(&self, customer: &CustomerId) -> Result<Option<WrappedDataKey>, Error>;

    /// Stores `wrapped` as the customer's match key unless it has one; `Ok(false)` if it had.
    async fn create_match_key(&self, customer: &CustomerId, wrapped: &WrappedDataKey) -> Result<bool, Error>;

    /// Takes `customer`'s index for `holder` until `until`, if it is free, expired at `now`, or
    /// already `holder`'s.
    async fn take_index(
        &self,
        customer: &CustomerId,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, Error>;

    /// Lets it go (nothing if another holds it now).
    async fn release_index(&self, customer: &CustomerId, holder: &str) -> Result<(), Error>;

    /// How far into `connection`'s feed the index is (0: nowhere yet).
    async fn index_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<u64, Error>;

    /// The links of the sources named, those that exist.
    async fn source_links(&self, customer: &CustomerId, sources: &[SourceRef]) -> Result<Vec<SourceLink>, Error>;

    /// The holders of the keys named, those that have any.
    async fn key_holders(&self, customer: &CustomerId, keys: &[MatchKey]) -> Result<Vec<KeyHolders>, Error>;

    /// The persons named, those that exist.
    async fn persons(&self, customer: &CustomerId, ids: &[PersonId]) -> Result<Vec<Person>, Error>;

    /// Writes an indexer's changes (see the module's order).
    async fn write_index(&self, customer: &CustomerId, writes: &IndexWrites) -> Result<(), Error>;

    /// Up to `limit` persons in id order, after `after`.
    async fn persons_page(
        &self,
        customer: &CustomerId,
        after: Option<&PersonId>,
        limit: usize,
    ) -> Result<Vec<Person>, Error>;

    /// Up to `limit` links of `connection`'s sources, in order, after `after`.
    async fn connection_links(
        &self,
        customer: &CustomerId,
        connection: &ConnectionId,
        after: Option<&SourceRef>,
        limit: usize,
    ) -> Result<Vec<SourceLink>, Error>;

    /// Forgets where the index stands in `connection`'s feed (the connection is gone).
    async fn drop_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<(), Error>;
}

/// What the indexer needs of the store: the feed and records, and the index.
pub trait IndexStore: super::data::RecordReads + PersonIndex {}
impl<T: super::data::RecordReads + PersonIndex + ?Sized> IndexStore for T {}
