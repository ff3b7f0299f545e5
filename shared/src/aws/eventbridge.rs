//! Status events on an EventBridge bus: the [`EventSink`] port.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::domain::Error;
use crate::events::{EventSink, SOURCE};
use crate::lazy::Lazy;

/// One bus (`EVENT_BUS_NAME`).
pub struct EventBridgeSink {
    client: Lazy<aws_sdk_eventbridge::Client>,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: Lazy<aws_sdk_eventbridge::Client>, bus: String) -> Self {
        Self { client, bus }
    }
}

#[async_trait]
impl EventSink for EventBridgeSink {
    async fn put(&self, detail_type: &str, detail: &str, resource: &str) -> Result<(), Error> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .resources(resource)
            .build();
        let out = self
            .client
            .get()
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(super::error("eventbridge", "PutEvents"))?;
        if out.failed_entry_count() == 0 {
            return Ok(());
        }
        // PutEvents answers 200 with per-entry failures: the entry was not accepted.
        let reason = out.entries().first().and_then(|e| e.error_code()).unwrap_or("unknown").to_owned();
        Err(Error::Aws {
            service: "eventbridge",
            operation: "PutEvents",
            retryable: true,
            source: format!("entry not accepted: {reason}").into(),
        })
    }
}
