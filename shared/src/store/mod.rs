//! What Perch keeps, and the DynamoDB adapter that keeps it.
//!
//! One table, one string partition key `pk`, four kinds of item:
//!
//! | `pk` | item | lifetime |
//! |---|---|---|
//! | `CONN#<connection_id>` | a connection and its KMS-encrypted token | until disconnected |
//! | `FCUST#<finch customer id>` | which customer owns a Finch `customer_id` | forever |
//! | `STATE#<state id>` | a pending Connect flow, consumed once | `STATE_TTL_SECONDS` |
//! | `CODE#<sha256(code)>` | a code exchange started or finished | 1 hour |
//!
//! A customer's connections are found through the `by_customer` index (`gsi1pk =
//! CUST#<customer>`, sorted by creation time), never by a scan. The index projects only the
//! listing attributes, so whoever reads it cannot see a ciphertext at all.
//!
//! Ownership of a Finch `customer_id` is claimed with a conditional put before it is ever
//! sent to Finch. The suffix scheme (`acme`, `acme-2`) is not injective across customers
//! (customer `acme-2` vs slot 2 of `acme`); the claim is what keeps one customer from being
//! handed a Connect session or a connection that Finch files under another's id.
//!
//! Every write that can race is conditional: states are consumed by a conditional delete, a
//! code exchange is started by a conditional put, and a connection is created with
//! `attribute_not_exists` or replaced only at the `version` it was read at.

mod dynamodb;
pub mod schema;

use time::OffsetDateTime;

pub use dynamodb::{DynamoStore, INDEX_BY_CUSTOMER, LISTING_ATTRIBUTES, ScanPage};

use crate::crypto::EncryptedToken;
use crate::types::{ConnectionId, ConnectionStatus, CustomerId, FinchCustomerId};

/// A stored connection. The token is only ever held encrypted.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub connection_id: ConnectionId,
    pub customer: CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub provider_id: String,
    pub company_name: Option<String>,
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    pub products: Vec<String>,
    pub entity_ids: Vec<String>,
    /// `production`, `sandbox` or `development`, as Finch reports it.
    pub client_type: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The `Finch-Request-Id`-bearing call that last changed this record, for support.
    pub last_finch_request_id: Option<String>,
    /// When Finch's status was observed (an introspection, or a webhook's timestamp): a
    /// status is only ever replaced by one observed later.
    pub status_observed_at: Option<OffsetDateTime>,
    /// When the status sweep last checked this connection.
    pub checked_at: Option<OffsetDateTime>,
    /// Set on the tombstone a disconnect leaves.
    pub disconnected_at: Option<OffsetDateTime>,
    /// Optimistic-concurrency counter; bumped by every write.
    pub version: u64,
    /// `None` once disconnected: the ciphertext is destroyed, the tombstone kept.
    pub token: Option<EncryptedToken>,
}

impl ConnectionRecord {
    /// Whether a disconnect has started or finished (a tombstone). A `disconnected` status
    /// Finch reported is not a tombstone: the ciphertext is kept until Perch disconnects.
    pub fn is_disconnecting_or_gone(&self) -> bool {
        self.status.as_str() == DISCONNECTING || self.disconnected_at.is_some()
    }
}

/// The status of a connection whose disconnect has started but not finished.
pub const DISCONNECTING: &str = "disconnecting";

/// What a status check or a webhook learned about a connection.
#[derive(Debug, Clone)]
pub struct Observation {
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    /// `None` leaves the stored value alone (a webhook does not carry them).
    pub products: Option<Vec<String>>,
    pub entity_ids: Option<Vec<String>>,
    pub request_id: Option<String>,
    pub observed_at: OffsetDateTime,
}

/// The listing view of a connection (what the `by_customer` index projects).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionSummary {
    pub connection_id: ConnectionId,
    pub provider_id: String,
    pub company_name: Option<String>,
    pub status: ConnectionStatus,
    pub products: Vec<String>,
    pub entity_ids: Vec<String>,
    pub finch_customer_id: FinchCustomerId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When the status sweep last checked the connection.
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked_at: Option<OffsetDateTime>,
}

/// Which Connect flow a state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowMode {
    Redirect,
    Embedded,
}

/// A Connect flow Perch started and is waiting to see come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFlow {
    pub customer: CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub session_id: String,
    pub mode: FlowMode,
    /// Set when the flow re-authenticates an existing connection.
    pub reauth_of: Option<ConnectionId>,
    pub expires_at: OffsetDateTime,
}

/// What starting a code exchange found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeStart {
    /// This call owns the exchange.
    Started,
    /// The code was already exchanged into this connection.
    Done { customer: CustomerId, connection_id: ConnectionId },
    /// Another call is exchanging it right now (or crashed doing so).
    InProgress,
}

/// What saving a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Created,
    /// An existing connection of the same customer got the new token (reauthentication).
    Replaced,
}

/// One page of a customer's connections.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<ConnectionSummary>,
    /// Opaque; pass back to get the next page.
    pub next_cursor: Option<String>,
}
