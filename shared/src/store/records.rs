//! The records the store traits exchange.

use time::OffsetDateTime;

use crate::crypto::EncryptedToken;
use crate::domain::{
    ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId, EventId, FinchCustomerId, FlowMode, Product,
    SessionId,
};

/// A stored connection. The token is only ever held encrypted.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub connection_id: ConnectionId,
    pub customer: CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub provider_id: String,
    /// Which employer this is, as Finch describes it.
    pub employer: Employer,
    /// The entities the token reaches (one, or several for a multi-entity connection), in
    /// Finch's order, each with its own status.
    pub entities: Vec<EntityRecord>,
    /// The uniqueness claim this connection holds (see [`employer_key`]); `None` when Finch
    /// named no company.
    pub employer_key: Option<String>,
    /// Set when Finch said the company or its entities changed (`company.updated`, a new
    /// entity): the sweep reads them again.
    pub refresh_requested_at: Option<OffsetDateTime>,
    pub status: ConnectionState,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    pub products: Vec<Product>,
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

    /// Whether the connection still works at Finch as far as Perch knows: not being
    /// disconnected, not a tombstone, not revoked at Finch.
    pub fn is_live_at_finch(&self) -> bool {
        !self.is_disconnecting_or_gone() && self.status != ConnectionStatus::Disconnected
    }

    /// Whether a disconnect has started or finished (a tombstone). A `disconnected` status
    /// Finch reported is not a tombstone: the ciphertext is kept until Perch disconnects.
    pub fn is_disconnecting_or_gone(&self) -> bool {
        self.status == ConnectionState::Disconnecting || self.disconnected_at.is_some()
    }

    /// The employer key for the entities this connection covers now (see [`employer_key`]).
    pub fn current_employer_key(&self) -> Option<String> {
        let ids: Vec<&EntityId> = self.live_entities().map(|e| &e.id).collect();
        employer_key(&self.customer, &self.provider_id, self.employer.company_id.as_deref(), &ids)
    }

    /// The entities Finch lists now, merged with the stored ones: an entity Perch
    /// disconnected stays disconnected (and listed), whatever Finch still says of it.
    pub fn merged_entities(&self, seen: Vec<EntityRecord>) -> Vec<EntityRecord> {
        let mut out: Vec<EntityRecord> = seen
            .into_iter()
            .map(|mut e| {
                if let Some(old) = self.entities.iter().find(|o| o.id == e.id && o.disconnected_at.is_some()) {
                    e.status = ConnectionStatus::Disconnected;
                    e.disconnected_at = old.disconnected_at;
                }
                e
            })
            .collect();
        for old in self.entities.iter().filter(|o| o.disconnected_at.is_some()) {
            if !out.iter().any(|e| e.id == old.id) {
                out.push(old.clone());
            }
        }
        out
    }

    /// The entities not disconnected.
    pub fn live_entities(&self) -> impl Iterator<Item = &EntityRecord> {
        self.entities.iter().filter(|e| e.is_live())
    }

    /// The listing view of this record.
    pub fn summary(&self) -> ConnectionSummary {
        ConnectionSummary::of(
            self.connection_id.clone(),
            self.provider_id.clone(),
            self.employer.clone(),
            self.status.clone(),
            self.products.clone(),
            &self.entities,
            self.client_type.clone(),
            self.finch_customer_id.clone(),
            (self.created_at, self.updated_at, self.checked_at),
        )
    }
}

impl ConnectionSummary {
    /// The listing view. A single-entity connection has one status: its entity shows the
    /// connection's (Finch reports a change of either as the connection's).
    #[allow(clippy::too_many_arguments)]
    pub fn of(
        connection_id: ConnectionId,
        provider_id: String,
        employer: Employer,
        status: ConnectionState,
        products: Vec<Product>,
        entities: &[EntityRecord],
        client_type: Option<String>,
        finch_customer_id: FinchCustomerId,
        (created_at, updated_at, checked_at): (OffsetDateTime, OffsetDateTime, Option<OffsetDateTime>),
    ) -> Self {
        let single = entities.len() == 1;
        let entities: Vec<EntitySummary> = entities
            .iter()
            .map(|e| {
                let mut v = e.summary();
                if single
                    && e.is_live()
                    && let ConnectionState::Finch(s) = &status
                {
                    v.status = s.clone();
                }
                v
            })
            .collect();
        Self {
            connection_id,
            provider_id,
            company_name: employer.display_name(),
            assisted: employer.is_assisted(),
            employer,
            status,
            products,
            entity_ids: entities
                .iter()
                .filter(|e| e.status != ConnectionStatus::Disconnected)
                .map(|e| e.entity_id.clone())
                .collect(),
            entities,
            client_type,
            finch_customer_id,
            created_at,
            updated_at,
            checked_at,
        }
    }
}

/// Who the employer behind a connection is, as Finch describes it (`/introspect`,
/// `/employer/company`, the token response).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Employer {
    /// Finch's id of the company.
    pub company_id: Option<String>,
    /// `/employer/company`'s `legal_name`; `None` until Finch gave it (an assisted connection
    /// answers 202 until its first data pull), which is what makes the sweep ask again.
    pub legal_name: Option<String>,
    /// The name the app gave Connect, shown until the legal name is known.
    pub customer_name: Option<String>,
    /// The contact the app gave Connect, when it gave one.
    pub customer_email: Option<String>,
    /// `finch` (Finch's sandbox data) or `provider`.
    pub connection_type: Option<String>,
    /// `credential`, `api_token`, `oauth`, `assisted`, …
    pub authentication_method: Option<String>,
}

impl Employer {
    /// The name to show: Finch's legal name, else the one the app gave Connect.
    pub fn display_name(&self) -> Option<String> {
        self.legal_name.clone().or_else(|| self.customer_name.clone())
    }

    /// Whether Finch's side is run by a person (assisted Connect) rather than automated.
    pub fn is_assisted(&self) -> bool {
        self.authentication_method.as_deref() == Some("assisted")
    }
}

/// One entity of a connection (seed 004: a division or EIN within the payroll system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRecord {
    pub id: EntityId,
    pub name: Option<String>,
    pub source_id: Option<String>,
    /// Finch's `EntityConnectionStatus`.
    pub status: ConnectionStatus,
    /// When that status was observed: only a later observation replaces it.
    pub observed_at: Option<OffsetDateTime>,
    /// Set once Perch disconnected it (or Finch reported it disconnected).
    pub disconnected_at: Option<OffsetDateTime>,
}

impl EntityRecord {
    pub fn is_live(&self) -> bool {
        self.disconnected_at.is_none() && self.status != ConnectionStatus::Disconnected
    }

    pub fn summary(&self) -> EntitySummary {
        EntitySummary {
            entity_id: self.id.clone(),
            name: self.name.clone(),
            source_id: self.source_id.clone(),
            status: self.status.clone(),
        }
    }
}

/// An entity as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntitySummary {
    pub entity_id: EntityId,
    pub name: Option<String>,
    pub source_id: Option<String>,
    pub status: ConnectionStatus,
}

/// The key of seed 004's composite uniqueness: one connection per customer, provider, Finch
/// company and entity set. `None` without a company id (nothing to compare). The entity ids
/// are sorted and hashed, so the key is short whatever the number of entities.
pub fn employer_key(
    customer: &CustomerId,
    provider_id: &str,
    company_id: Option<&str>,
    entity_ids: &[&EntityId],
) -> Option<String> {
    use sha2::Digest;
    let company = company_id.filter(|c| !c.is_empty())?;
    let mut ids: Vec<&str> = entity_ids.iter().map(|e| e.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let digest = sha2::Sha256::digest(ids.join(",").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Some(format!("{customer}#{provider_id}#{company}#{hex}"))
}

/// What a status check or a webhook learned about a connection.
#[derive(Debug, Clone)]
pub struct Observation {
    pub status: ConnectionStatus,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    /// `None` leaves the stored value alone (a 401 carries neither).
    pub products: Option<Vec<Product>>,
    /// The entities as Finch lists them now; merged with the stored ones (a disconnect Perch
    /// made is kept).
    pub entities: Option<Vec<EntityRecord>>,
    /// The employer as Finch describes it now (with the legal name only when it was read).
    pub employer: Option<Employer>,
    pub request_id: Option<String>,
    pub observed_at: OffsetDateTime,
}

/// The listing view of a connection (what the `by_customer` index projects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionSummary {
    pub connection_id: ConnectionId,
    pub provider_id: String,
    /// Finch's legal name of the company, else the name the app gave Connect.
    pub company_name: Option<String>,
    #[serde(flatten)]
    pub employer: Employer,
    /// Whether the connection is assisted (Finch's staff pull the data) rather than automated.
    pub assisted: bool,
    pub status: ConnectionState,
    pub products: Vec<Product>,
    /// The live entities' ids (kept for clients of the first version of this listing).
    pub entity_ids: Vec<EntityId>,
    pub entities: Vec<EntitySummary>,
    pub client_type: Option<String>,
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
    /// The connection does not list that entity.
    NoSuchEntity,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    Created,
    /// An existing connection of the same customer got the new token (reauthentication).
    Replaced,
    /// Not saved: this connection holds the same employer key (see [`employer_key`]); nothing
    /// was written.
    ClaimedBy(ConnectionId),
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
