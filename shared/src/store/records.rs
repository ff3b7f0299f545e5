//! The records the store traits exchange.

use time::OffsetDateTime;

use crate::crypto::EncryptedToken;
use crate::domain::{
    ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EventId, FinchCustomerId, FlowMode, Product, SessionId,
};

/// A stored connection. The token is only ever held encrypted.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub connection_id: ConnectionId,
    pub customer: CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub provider_id: String,
    pub company_name: Option<String>,
    pub status: ConnectionState,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    pub products: Vec<Product>,
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
    /// While `disconnecting`: until when the call that marked it holds the disconnect (the only
    /// one that calls Finch); `None` once it gave up, so a retry may take over at once.
    pub disconnect_lease: Option<OffsetDateTime>,
    /// Optimistic-concurrency counter; bumped by every write.
    pub version: u64,
    /// `None` once disconnected: the ciphertext is destroyed, the tombstone kept.
    pub token: Option<EncryptedToken>,
}

impl ConnectionRecord {
    /// Whether another call holds this connection's disconnect at `now`.
    pub fn disconnect_held_at(&self, now: OffsetDateTime) -> bool {
        self.status == ConnectionState::Disconnecting && self.disconnect_lease.is_some_and(|until| until > now)
    }

    /// Whether a disconnect has started or finished (a tombstone). A `disconnected` status
    /// Finch reported is not a tombstone: the ciphertext is kept until Perch disconnects.
    pub fn is_disconnecting_or_gone(&self) -> bool {
        self.status == ConnectionState::Disconnecting || self.disconnected_at.is_some()
    }

    /// The listing view of this record.
    pub fn summary(&self) -> ConnectionSummary {
        ConnectionSummary {
            connection_id: self.connection_id.clone(),
            provider_id: self.provider_id.clone(),
            company_name: self.company_name.clone(),
            status: self.status.clone(),
            products: self.products.clone(),
            entity_ids: self.entity_ids.clone(),
            finch_customer_id: self.finch_customer_id.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            checked_at: self.checked_at,
        }
    }
}

/// What a status check or a webhook learned about a connection.
#[derive(Debug, Clone)]
pub struct Observation {
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    /// `None` leaves the stored value alone (a 401 carries neither).
    pub products: Option<Vec<Product>>,
    pub entity_ids: Option<Vec<String>>,
    pub request_id: Option<String>,
    pub observed_at: OffsetDateTime,
}

/// The listing view of a connection (what the `by_customer` index projects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionSummary {
    pub connection_id: ConnectionId,
    pub provider_id: String,
    pub company_name: Option<String>,
    pub status: ConnectionState,
    pub products: Vec<Product>,
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

/// A Connect flow Perch started and is waiting to see come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFlow {
    pub customer: CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub session_id: SessionId,
    pub mode: FlowMode,
    /// Set when the flow re-authenticates an existing connection.
    pub reauth_of: Option<ConnectionId>,
    pub expires_at: OffsetDateTime,
}

/// A status Finch pushed for a connection Perch did not hold yet (its first callback was
/// between the exchange and the save): parked until that callback stores the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedStatus {
    pub status: ConnectionStatus,
    pub observed_at: OffsetDateTime,
    pub event: EventId,
}

/// What applying a pushed status did.
#[derive(Debug, Clone)]
pub enum Pushed {
    /// Applied; the record as it was before.
    Applied(Box<ConnectionRecord>),
    /// Not applied: the connection is being disconnected, gone, or holds a status observed later.
    Stale,
    /// Perch holds no such connection (yet).
    Unknown,
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

/// One page of a scan (a sweep segment or a key migration).
#[derive(Debug)]
pub struct ScanPage {
    pub items: Vec<ConnectionRecord>,
    /// Where the scan continues (an opaque position after the last item read), if it does.
    pub next: Option<String>,
    /// Items read, before the filter.
    pub scanned: i32,
}
