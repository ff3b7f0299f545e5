//! The table's key scheme and attribute names: every prefix and name the adapter writes, once.
//!
//! | `pk` | item | lifetime |
//! |---|---|---|
//! | `CONN#<connection_id>` | a connection and its KMS-encrypted token | until disconnected, then a tombstone |
//! | `FCUST#<finch customer id>` | which customer owns a Finch `customer_id` | forever |
//! | `STATE#<state id>` | a pending Connect flow, consumed once | the Finch session's |
//! | `CODE#<keyed hash of the code>` | a code exchange started or finished | 1 hour |
//! | `EVENT#<finch-event-id>` | a webhook event already handled | 7 days |
//! | `PUSH#<connection_id>` | a status pushed before the connection was stored | 1 hour |
//! | `EMPLOYER#<customer>#<provider>#<company>#<entity-set hash>` | the one connection of an employer | until that connection is disconnected |
//! | `BUDGET#<window>` | what was taken from one of Finch's rate windows, by second | kept (a few small items) |
//!
//! A customer's connections are found through the `by_customer` index (`gsi1pk =
//! CUST#<customer>`, `gsi1sk = <created_at>#<connection_id>`), never by a scan.

use crate::domain::{CodeHash, ConnectionId, CustomerId, EventId, FinchCustomerId, StateId};

/// The partition key of every item.
pub const PK: &str = "pk";
/// What an item is (`connection`, `finch_customer`, `state`, `code`, `event`, `parked_status`):
/// scans filter on it.
pub const KIND: &str = "kind";
/// The TTL attribute (epoch seconds) of states, code markers and event ids.
pub const TTL: &str = "expires_at";
/// The customer → connections index and its key attributes.
pub const INDEX_BY_CUSTOMER: &str = "by_customer";
pub const GSI1PK: &str = "gsi1pk";
pub const GSI1SK: &str = "gsi1sk";

/// Non-key attributes the index projects: the listing, and never the token.
pub const LISTING_ATTRIBUTES: &[&str] = &[
    "connection_id",
    "customer_id",
    "provider_id",
    "company_id",
    "legal_name",
    "customer_name",
    "customer_email",
    "connection_type",
    "authentication_method",
    "client_type",
    "status",
    "products",
    "entities",
    "finch_customer_id",
    "created_at",
    "updated_at",
    "checked_at",
];

/// The `kind` of each item.
pub mod kind {
    pub const CONNECTION: &str = "connection";
    pub const FINCH_CUSTOMER: &str = "finch_customer";
    pub const STATE: &str = "state";
    pub const CODE: &str = "code";
    pub const EVENT: &str = "event";
    pub const PARKED: &str = "parked_status";
    pub const EMPLOYER: &str = "employer";
    pub const BUDGET: &str = "budget";
}

/// A Finch rate window's item.
pub fn budget(name: &str) -> String {
    format!("BUDGET#{name}")
}

const CONNECTION: &str = "CONN#";

pub fn connection(id: &ConnectionId) -> String {
    format!("{CONNECTION}{id}")
}

/// Whether a `pk` is a connection's (a listing cursor must name one).
pub fn is_connection(pk: &str) -> bool {
    pk.starts_with(CONNECTION)
}

pub fn customer(c: &CustomerId) -> String {
    format!("CUST#{c}")
}

pub fn finch_customer(id: &FinchCustomerId) -> String {
    format!("FCUST#{id}")
}

pub fn state(id: &StateId) -> String {
    format!("STATE#{id}")
}

pub fn code(hash: &CodeHash) -> String {
    format!("CODE#{hash}")
}

pub fn event(id: &EventId) -> String {
    format!("EVENT#{id}")
}

pub fn parked(id: &ConnectionId) -> String {
    format!("PUSH#{id}")
}

pub fn employer(key: &str) -> String {
    format!("EMPLOYER#{key}")
}
