//! What an operator does (seed 000: every team must be able to disconnect): list a customer's
//! connections, show one, disconnect one, or disconnect all of a customer's — a customer
//! leaving, a contract ended. `perch-admin` is the command line over these.
//!
//! - **Never the token.** [`OperatorView`] says whether a ciphertext is held and under which
//!   key; the ciphertext itself is not in it, and the plaintext never leaves KMS but for the
//!   `/disconnect` call.
//! - **The same disconnect.** An operator's disconnect is the API's ([`super::lifecycle`]):
//!   the lease, Finch's `/disconnect`, the tombstone, the status event. Only who may ask differs:
//!   the operator names a connection, and its customer is read from the record.
//! - **Paced.** Each disconnect is one Finch request and one KMS `Decrypt`; disconnecting a
//!   customer's connections spends them at `per_second` (Finch allows an IP 1,000 requests per
//!   5 minutes, shared with the sweep), with evenly spaced slots as the sweep does.
//! - **Resumable.** A disconnected connection leaves the customer's listing, so a run that
//!   stopped half-way (killed, or failures) is finished by running it again: it finds only what
//!   is left. One connection's failure is reported and the run goes on.

use serde::Serialize;
use time::OffsetDateTime;

use super::lifecycle::{self, Disconnected};
use super::sweep::Pacer;
use crate::app::{Adapters, AppState};
use crate::domain::{ConnectionId, CustomerId, Error};
use crate::store::{ConnectionRecord, ConnectionSummary, ListConnections, ReadConnection};

/// A page of the listing, as large as the store allows.
const PAGE: i32 = 100;

/// One connection as an operator sees it: everything but the token.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorView {
    pub customer_id: CustomerId,
    #[serde(flatten)]
    pub connection: ConnectionSummary,
    pub status_message: Option<String>,
    pub last_successful_sync: Option<String>,
    pub last_finch_request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub status_observed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disconnected_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub refresh_requested_at: Option<OffsetDateTime>,
    pub version: u64,
    /// Whether a token is held (`false` once disconnected), and under which KMS key.
    pub token_held: bool,
    pub token_key_id: Option<String>,
}

impl From<&ConnectionRecord> for OperatorView {
    fn from(r: &ConnectionRecord) -> Self {
        Self {
            customer_id: r.customer.clone(),
            connection: r.summary(),
            status_message: r.status_message.clone(),
            last_successful_sync: r.last_successful_sync.clone(),
            last_finch_request_id: r.last_finch_request_id.clone(),
            status_observed_at: r.status_observed_at,
            disconnected_at: r.disconnected_at,
            refresh_requested_at: r.refresh_requested_at,
            version: r.version,
            token_held: r.token.is_some(),
            token_key_id: r.token.as_ref().map(|t| t.key_id.clone()),
        }
    }
}

/// Every live connection of a customer, oldest first.
pub async fn list<A: Adapters>(app: &AppState<A>, customer: &CustomerId) -> Result<Vec<ConnectionSummary>, Error> {
    let store: &dyn ListConnections = &*app.store;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_connections(customer, PAGE, cursor.as_deref()).await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(all),
        }
    }
}

/// One connection, tombstones included; a 404 for an id Perch never held.
pub async fn show<A: Adapters>(app: &AppState<A>, raw_id: &str) -> Result<OperatorView, Error> {
    Ok(OperatorView::from(&record(app, raw_id).await?))
}

async fn record<A: Adapters>(app: &AppState<A>, raw_id: &str) -> Result<ConnectionRecord, Error> {
    let store: &dyn ReadConnection = &*app.store;
    let id = ConnectionId::parse(raw_id).map_err(|_| Error::NotFound("connection"))?;
    store.get_connection(&id).await?.ok_or(Error::NotFound("connection"))
}

/// Disconnects one connection, whoever's it is.
pub async fn disconnect_one<A: Adapters>(app: &AppState<A>, raw_id: &str) -> Result<Disconnected, Error> {
    let rec = record(app, raw_id).await?;
    tracing::info!(connection_id = %rec.connection_id, customer = %rec.customer, "operator disconnect");
    lifecycle::disconnect(app, &rec.customer, rec.connection_id.as_str()).await
}

/// One connection a run could not disconnect, and why (the error's chain: no secret in it).
#[derive(Debug, Clone, Serialize)]
pub struct NotDisconnected {
    pub connection_id: ConnectionId,
    pub error: String,
}

/// What disconnecting a customer's connections did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DisconnectReport {
    pub customer_id: Option<CustomerId>,
    /// Disconnected by this run.
    pub disconnected: u64,
    /// Found disconnected already (another call finished first).
    pub already: u64,
    /// Still connected: run again to retry them.
    pub failed: Vec<NotDisconnected>,
}

/// Disconnects every connection of `customer`, `per_second` at most (see the module docs).
/// `progress` hears of each connection as it is done.
pub async fn disconnect_all<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    per_second: f64,
    mut progress: impl FnMut(&ConnectionId, &Result<Disconnected, Error>),
) -> Result<DisconnectReport, Error> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(Error::invalid("invalid_rate", "The rate must be a positive number of disconnects a second."));
    }
    let store: &dyn ListConnections = &*app.store;
    let pacer = Pacer::new(std::time::Duration::from_secs_f64(1.0 / per_second));
    let mut report = DisconnectReport { customer_id: Some(customer.clone()), ..Default::default() };
    let mut cursor: Option<String> = None;
    loop {
        // One page at a time: memory is one page, whatever the customer's size. The cursor is
        // a position (creation time, id), so the connections this run removes from the index
        // do not shift it.
        let page = store.list_connections(customer, PAGE, cursor.as_deref()).await?;
        for c in &page.items {
            pacer.acquire().await;
            let outcome = lifecycle::disconnect(app, customer, c.connection_id.as_str()).await;
            progress(&c.connection_id, &outcome);
            match outcome {
                Ok(Disconnected::Now) => report.disconnected += 1,
                Ok(Disconnected::Already) => report.already += 1,
                Err(Error::NotFound(_)) => report.already += 1,
                Err(e) => {
                    tracing::warn!(connection_id = %c.connection_id, error = %e.chain(), "operator disconnect failed; run again to retry");
                    report.failed.push(NotDisconnected { connection_id: c.connection_id.clone(), error: e.chain() });
                }
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    tracing::info!(customer = %customer, disconnected = report.disconnected, already = report.already, failed = report.failed.len(), "operator disconnect of a customer done");
    Ok(report)
}
