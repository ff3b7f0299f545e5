//! The status sweep's Lambda (see `perch::sweep` for the design and its bound).
//!
//! - Invoked by the EventBridge schedule: plans a round, one SQS message per scan segment.
//! - Invoked by SQS: runs each message's segment until done or near the deadline, hands the
//!   rest back to the queue, and reports failed messages as partial-batch failures.
//!
//! A failed planning run returns `Err`, so Lambda's error metrics and retries apply.

use lambda_runtime::{Diagnostic, LambdaEvent};
use perch::lazy::Service;
use perch::sweep::{self, Pacer, SegmentWork, SweepSettings};
use perch::{AppState, Error};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::prewarm`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::EventBridge, Service::Finch];

/// The clients and settings the sweep needs; built once per container.
pub struct Sweeper<'a> {
    pub app: &'a AppState,
    pub settings: SweepSettings,
    pub sqs: aws_sdk_sqs::Client,
}

impl<'a> Sweeper<'a> {
    pub fn new(app: &'a AppState, settings: SweepSettings, sqs: aws_sdk_sqs::Client) -> Self {
        Self { app, settings, sqs }
    }
}

/// A run that failed as a whole (Lambda records it as an error).
#[derive(Debug)]
pub struct SweepFailed(String);

impl std::fmt::Display for SweepFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SweepFailed {}

impl From<SweepFailed> for Diagnostic {
    fn from(e: SweepFailed) -> Self {
        Diagnostic { error_type: "SweepFailed".into(), error_message: e.0 }
    }
}

#[derive(Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId")]
    message_id: String,
    body: String,
}

/// Handles a scheduled event or an SQS batch.
pub async fn handle(s: &Sweeper<'_>, event: LambdaEvent<Value>) -> Result<Value, SweepFailed> {
    let remaining = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + remaining;
    match event.payload.get("Records").cloned() {
        Some(records) => {
            let records: Vec<SqsRecord> =
                serde_json::from_value(records).map_err(|e| SweepFailed(format!("not an SQS batch: {e}")))?;
            Ok(run_batch(s, records, deadline).await)
        }
        None => plan(s, deadline).await.map_err(|e| {
            tracing::error!(error = %e.chain(), "status sweep planning failed");
            SweepFailed(e.problem().detail)
        }),
    }
}

async fn plan(s: &Sweeper<'_>, deadline: tokio::time::Instant) -> Result<Value, Error> {
    let work = sweep::plan(&s.settings, OffsetDateTime::now_utc());
    match &s.settings.queue_url {
        Some(url) => {
            sweep::enqueue(&s.sqs, url, &work).await?;
            tracing::info!(segments = work.len(), "status sweep planned");
            Ok(json!({"planned": work.len()}))
        }
        None => {
            // Without a queue there is no one to hand over to: sweep inline while time lasts.
            let report = sweep::run_round(s.app, &s.settings, deadline).await?;
            if report.next.is_some() {
                tracing::error!(
                    "status sweep ran out of time without SWEEP_QUEUE_URL; the rest waits for the next round"
                );
            }
            Ok(json!({"checked": report.checked}))
        }
    }
}

async fn run_batch(s: &Sweeper<'_>, records: Vec<SqsRecord>, deadline: tokio::time::Instant) -> Value {
    let pacer = Pacer::new(s.settings.slot());
    let mut failures = Vec::new();
    for r in records {
        match run_one(s, &pacer, &r.body, deadline).await {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(message_id = %r.message_id, error = %e.chain(), "status sweep work item failed; SQS will retry it");
                failures.push(json!({"itemIdentifier": r.message_id}));
            }
        }
    }
    json!({"batchItemFailures": failures})
}

async fn run_one(s: &Sweeper<'_>, pacer: &Pacer, body: &str, deadline: tokio::time::Instant) -> Result<(), Error> {
    let work: SegmentWork = serde_json::from_str(body)
        .map_err(|e| Error::invalid("invalid_work", format!("not a sweep work item: {e}")))?;
    let report = sweep::run_segment(s.app, &s.settings, pacer, work, deadline).await?;
    if let Some(next) = report.next {
        let url = s.settings.queue_url.as_deref().ok_or_else(|| Error::internal("SWEEP_QUEUE_URL is not set"))?;
        sweep::enqueue(&s.sqs, url, &[next]).await?;
    }
    Ok(())
}
