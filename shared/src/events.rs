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
/// The `DetailType` of Perch's events.
pub const DETAIL_TYPE: &str = "Connection Status Changed";

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
}

impl ChangeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reauthenticate => "reauthenticate",
            Self::StatusCheck => "status_check",
            Self::Webhook => "webhook",
            Self::Disconnect => "disconnect",
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
    /// Delivers one event's JSON detail about `resource` (the connection id).
    async fn put(&self, detail: &str, resource: &str) -> Result<(), Error>;
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
        if let Err(e) = sink.put(&detail, change.connection_id.as_str()).await {
            tracing::error!(%detail, error = %e.chain(), "status event not published");
        }
    }
}
