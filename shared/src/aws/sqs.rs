//! The queues on SQS: the sweep's work ([`WorkQueue`]) and the sync's ([`SyncQueue`]).

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde::Serialize;

use crate::domain::Error;
use crate::flows::sweep::{SegmentWork, WorkQueue};
use crate::lazy::Lazy;
use crate::queue::{SyncQueue, SyncWork};

/// Sends `items` as JSON messages in batches of 10 (SQS's limit), each delivered after `delay`
/// seconds; a batch SQS accepts only in part is a (retryable) failure.
async fn send_all<T: Serialize>(
    client: &aws_sdk_sqs::Client,
    url: &str,
    items: &[T],
    delay: Option<i32>,
) -> Result<(), Error> {
    for (n, chunk) in items.chunks(10).enumerate() {
        let mut batch = client.send_message_batch().queue_url(url);
        for (i, item) in chunk.iter().enumerate() {
            let body = serde_json::to_string(item).map_err(|e| Error::internal_from("serialising queue work", e))?;
            let entry = SendMessageBatchRequestEntry::builder()
                .id(format!("w{n}-{i}"))
                .message_body(body)
                .set_delay_seconds(delay)
                .build()
                .map_err(super::build_error)?;
            batch = batch.entries(entry);
        }
        let out = batch.send().await.map_err(super::error("sqs", "SendMessageBatch"))?;
        if !out.failed().is_empty() {
            return Err(Error::Aws {
                service: "sqs",
                operation: "SendMessageBatch",
                retryable: true,
                source: format!("{} entries not accepted", out.failed().len()).into(),
            });
        }
    }
    Ok(())
}

/// One queue (`SWEEP_QUEUE_URL`).
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn send(&self, work: &[SegmentWork]) -> Result<(), Error> {
        send_all(&self.client, &self.url, work, None).await
    }
}

/// The sync queue (`SYNC_QUEUE_URL`): the [`SyncQueue`] port. Its client is built on first use.
pub struct SqsSyncQueue {
    client: Lazy<aws_sdk_sqs::Client>,
    url: String,
}

impl SqsSyncQueue {
    pub fn new(client: Lazy<aws_sdk_sqs::Client>, url: String) -> Self {
        Self { client, url }
    }

    /// Builds the client now (in init).
    pub fn prewarm(&self) {
        self.client.get();
    }
}

/// SQS's longest delivery delay.
const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

#[async_trait]
impl SyncQueue for SqsSyncQueue {
    async fn send(&self, work: &[SyncWork], delay: std::time::Duration) -> Result<(), Error> {
        // A longer wait is served by the worker pausing again when it gets the message early.
        let delay = i32::try_from(delay.min(MAX_DELAY).as_secs()).unwrap_or(900);
        send_all(self.client.get(), &self.url, work, Some(delay)).await
    }
}
