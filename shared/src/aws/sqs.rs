//! The sweep's work queue on SQS: the [`WorkQueue`] port.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::domain::Error;
use crate::flows::sweep::{SegmentWork, WorkQueue};

/// One queue (`SWEEP_QUEUE_URL`); messages in batches of 10, SQS's limit.
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
        for (n, chunk) in work.chunks(10).enumerate() {
            let mut batch = self.client.send_message_batch().queue_url(&self.url);
            for (i, w) in chunk.iter().enumerate() {
                let body = serde_json::to_string(w).map_err(|e| Error::internal_from("serialising sweep work", e))?;
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(format!("w{n}-{i}"))
                    .message_body(body)
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
}
