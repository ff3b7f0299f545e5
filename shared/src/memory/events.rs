//! Status events, recorded instead of sent.

use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::Error;
use crate::events::EventSink;

/// Keeps every event's detail, in order.
#[derive(Default)]
pub struct RecordingSink {
    events: Mutex<Vec<(String, serde_json::Value)>>,
}

impl RecordingSink {
    /// The details published so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.typed(crate::events::DETAIL_TYPE)
    }

    /// The details of one detail type published so far.
    pub fn typed(&self, detail_type: &str) -> Vec<serde_json::Value> {
        lock(&self.events).iter().filter(|(t, _)| t == detail_type).map(|(_, v)| v.clone()).collect()
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn put(&self, detail_type: &str, detail: &str, _resource: &str) -> Result<(), Error> {
        let v = serde_json::from_str(detail).map_err(|e| Error::internal_from("event detail is not JSON", e))?;
        lock(&self.events).push((detail_type.to_owned(), v));
        Ok(())
    }
}
