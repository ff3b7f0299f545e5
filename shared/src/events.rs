//! Telling the app: a connection's status changed.
//!
//! Every change (connected, reauth, back to connected, disconnected, …) is logged as a
//! `connection status changed` line and, when `EVENT_BUS_NAME` is set, published to that
//! EventBridge bus as:
//!
//! ```json
//! { "Source": "perch", "DetailType": "Connection Status Changed",
//!   "Detail": { "connection_id": "…", "customer_id": "acme", "provider_id": "gusto",
//!               "previous_status": "connected", "status": "reauth",
//!               "source": "webhook", "observed_at": "2026-11-23T19:42:15.521162Z" } }
//! ```
//!
//! `source` says who noticed: `connect`, `reauthenticate`, `status_check`, `webhook` or
//! `disconnect`. The status is committed before the event is sent; a publish failure is logged
//! with the whole detail (so nothing is silently lost) and does not undo the change.

use serde::Serialize;
use time::OffsetDateTime;

use crate::types::{ConnectionId, ConnectionStatus, CustomerId};

/// The `DetailType` of Perch's events.
pub const DETAIL_TYPE: &str = "Connection Status Changed";

/// The event's detail.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChanged {
    pub connection_id: ConnectionId,
    pub customer_id: CustomerId,
    pub provider_id: String,
    pub previous_status: Option<ConnectionStatus>,
    pub status: ConnectionStatus,
    pub source: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
}

/// Publishes status changes (to the log, and to EventBridge when configured).
#[derive(Clone)]
pub struct EventPublisher {
    bus: Option<(crate::lazy::Lazy<aws_sdk_eventbridge::Client>, String)>,
}

impl EventPublisher {
    pub fn new(client: crate::lazy::Lazy<aws_sdk_eventbridge::Client>, bus: Option<String>) -> Self {
        Self { bus: bus.map(|b| (client, b)) }
    }

    /// Builds the EventBridge client now, if events are configured (see [`crate::lazy`]).
    pub fn prewarm(&self) {
        if let Some((client, _)) = &self.bus {
            client.get();
        }
    }

    /// Publishes one change; never fails the caller (see the module docs).
    pub async fn publish(&self, change: &StatusChanged) {
        if change.previous_status.as_ref() == Some(&change.status) {
            return;
        }
        let detail = serde_json::to_string(change).unwrap_or_default();
        tracing::info!(
            connection_id = %change.connection_id,
            customer = %change.customer_id,
            previous_status = change.previous_status.as_ref().map(ConnectionStatus::as_str),
            status = change.status.as_str(),
            source = change.source,
            "connection status changed"
        );
        let Some((client, bus)) = &self.bus else { return };
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source("perch")
            .detail_type(DETAIL_TYPE)
            .detail(&detail)
            .resources(change.connection_id.as_str())
            .build();
        match client.get().put_events().entries(entry).send().await {
            Ok(out) if out.failed_entry_count() == 0 => {}
            Ok(out) => {
                let reason = out.entries().first().and_then(|e| e.error_code()).unwrap_or("unknown").to_owned();
                tracing::error!(%detail, reason, "status event not accepted by EventBridge");
            }
            Err(e) => {
                tracing::error!(%detail, error = %crate::Error::aws("eventbridge", "PutEvents", true, e).chain(), "status event not published")
            }
        }
    }
}
