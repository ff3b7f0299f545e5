//! Telling the app: a connection's status changed.
//!
//! Every change (connected, reauth, back to connected, disconnected, …) is logged as a
//! `connection status changed` line and, when an [`EventSink`] is configured (EventBridge, with
//! `EVENT_BUS_NAME`: [`crate::aws::eventbridge`]), published as:
//!
//! ```json
//! { "Source": "perch", "DetailType": "Connection Status Changed",
//!   "Detail": { "connection_id": "…", "customer_id": "acme", "provider_id": "gusto",
//!               "previous_status": "connected", "status": "reauth",
//!               "source": "webhook", "observed_at": "2026-11-23T19:42:15.521162Z" } }
//! ```
//!
//! A sync of a connection's data that completes or fails is published the same way, as
//! `Connection Sync Completed` / `Connection Sync Failed` ([`SyncFinished`]): ids, the state,
//! counts of records added, updated and removed, never a record.
//!
//! `source` says who noticed ([`ChangeSource`]). The status is committed before the event is
//! sent; a publish failure is logged with the whole detail (so nothing is silently lost) and
//! does not undo the change.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{ConnectionId, ConnectionStatus, CustomerId, EntityId, Error};
use crate::store::ConnectionRecord;

/// The `Source` of Perch's events.
pub const SOURCE: &str = "perch";
/// The `DetailType` of Perch's status events.
pub const DETAIL_TYPE: &str = "Connection Status Changed";
/// The `DetailType` of a sync that completed, and of one that failed.
pub const SYNC_COMPLETED: &str = "Connection Sync Completed";
pub const SYNC_FAILED: &str = "Connection Sync Failed";

/// Who noticed a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// A first Connect flow stored the connection.
    Connect,
    /// A re-authentication replaced its token.
    Reauthenticate,
    /// The status sweep's `/introspect`.
    StatusCheck,
    /// Finch's `account.updated` webhook.
    Webhook,
    /// Perch disconnected it.
    Disconnect,
    /// A data sync's request was refused (401).
    DataSync,
}

impl ChangeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reauthenticate => "reauthenticate",
            Self::StatusCheck => "status_check",
            Self::Webhook => "webhook",
            Self::Disconnect => "disconnect",
            Self::DataSync => "data_sync",
        }
    }
}

/// The event's detail.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChanged {
    pub connection_id: ConnectionId,
    pub customer_id: CustomerId,
    pub provider_id: String,
    pub previous_status: Option<ConnectionStatus>,
    pub status: ConnectionStatus,
    /// Set when the change is one entity's of a multi-entity connection: the statuses are then
    /// that entity's, and the connection's own is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<EntityId>,
    pub source: ChangeSource,
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
}

impl StatusChanged {
    /// The change of `record`'s connection from Finch's `previous` status (`None`: it had
    /// none, or Perch was disconnecting it) to `status`.
    pub fn of(
        record: &ConnectionRecord,
        previous: Option<ConnectionStatus>,
        status: ConnectionStatus,
        source: ChangeSource,
        observed_at: OffsetDateTime,
    ) -> Self {
        Self {
            connection_id: record.connection_id.clone(),
            customer_id: record.customer.clone(),
            provider_id: record.provider_id.clone(),
            previous_status: previous,
            status,
            entity_id: None,
            source,
            observed_at,
        }
    }

    /// The same change, of one entity.
    pub fn for_entity(mut self, entity: &EntityId) -> Self {
        self.entity_id = Some(entity.clone());
        self
    }
}

/// Where events go besides the log.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers one event of `detail_type`, its JSON detail about `resource` (the connection id).
    async fn put(&self, detail_type: &str, detail: &str, resource: &str) -> Result<(), Error>;
}

/// Publishes status changes: to the log always, to the sink when there is one.
pub struct EventPublisher<E> {
    sink: Option<Arc<E>>,
}

impl<E: EventSink> EventPublisher<E> {
    pub fn new(sink: Option<Arc<E>>) -> Self {
        Self { sink }
    }

    /// Publishes one change; never fails the caller (see the module docs). A "change" to the
    /// same status is not one.
    pub async fn publish(&self, change: &StatusChanged) {
        if change.previous_status.as_ref() == Some(&change.status) {
            return;
        }
        tracing::info!(
            connection_id = %change.connection_id,
            customer = %change.customer_id,
            previous_status = change.previous_status.as_ref().map(ConnectionStatus::as_str),
            status = change.status.as_str(),
            source = change.source.as_str(),
            "connection status changed"
        );
        let Some(sink) = &self.sink else { return };
        // Ids, statuses and a timestamp: serialising it cannot fail.
        let detail = match serde_json::to_string(change) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(connection_id = %change.connection_id, error = %e, "status event not serialisable");
                return;
            }
        };
        if let Err(e) = sink.put(DETAIL_TYPE, &detail, change.connection_id.as_str()).await {
            tracing::error!(%detail, error = %e.chain(), "status event not published");
        }
    }
}

/// A sync run of one entity that finished: completed, or failed (with the state that says why).
#[derive(Debug, Clone, Serialize)]
pub struct SyncFinished {
    pub connection_id: ConnectionId,
    pub customer_id: CustomerId,
    pub entity_id: EntityId,
    /// The entity's sync state after the run (`current`, `missing_scope`, `error`, …).
    pub state: &'static str,
    /// A failure's reason code (never data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    /// `Finch-Data-Retrieved` of the snapshot synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_retrieved: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

impl<E: EventSink> EventPublisher<E> {
    /// Publishes a finished sync (`completed` says which detail type); never fails the caller.
    pub async fn publish_sync(&self, completed: bool, done: &SyncFinished) {
        tracing::info!(
            connection_id = %done.connection_id,
            entity_id = %done.entity_id,
            state = done.state,
            reason = done.reason.as_deref().unwrap_or("-"),
            added = done.added,
            updated = done.updated,
            removed = done.removed,
            "connection sync finished"
        );
        let Some(sink) = &self.sink else { return };
        let kind = if completed { SYNC_COMPLETED } else { SYNC_FAILED };
        match serde_json::to_string(done) {
            Ok(detail) => {
                if let Err(e) = sink.put(kind, &detail, done.connection_id.as_str()).await {
                    tracing::error!(%detail, error = %e.chain(), "sync event not published");
                }
            }
            Err(e) => tracing::error!(connection_id = %done.connection_id, error = %e, "sync event not serialisable"),
        }
    }
}
