//! The sync worker, locally: what Lambda's SQS event source and the EventBridge schedule do
//! for it when deployed.
//!
//! A loop receives batches from the sync queue (`SYNC_QUEUE_URL`, on the AWS emulator), hands
//! each to the same `sync_worker::handle` the Lambda binary calls, and deletes the messages it
//! did not report as failed (a failed one comes back after its visibility timeout, as on AWS).
//! Every `SYNC_SCHEDULE_SECONDS` (default 60) it also delivers the scheduled event, and
//! `POST /dev/sync/schedule` delivers one at once.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use perch::AppState;
use perch::aws::Aws;
use perch::flows::sync::SyncSettings;
use serde_json::Value;
use sync_worker::{Invocation, Worker};

/// How long a local invocation may run (Lambda's maximum, as `template.yaml` sets it).
const INVOCATION: Duration = Duration::from_secs(900);

fn context() -> lambda_runtime::Context {
    let mut ctx = lambda_runtime::Context::default();
    let deadline = std::time::SystemTime::now() + INVOCATION;
    ctx.deadline = deadline.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    ctx
}

/// One scheduled turn: the entities due, sent to the queue.
pub async fn schedule(app: &AppState<Aws>) -> Result<Value, String> {
    let settings = SyncSettings::from_lookup(|_| None).map_err(|e| e.to_string())?;
    let worker = Worker { app, settings };
    let event: Invocation = serde_json::from_value(serde_json::json!({
        "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}
    }))
    .map_err(|e| e.to_string())?;
    sync_worker::handle(&worker, LambdaEvent::new(event, context())).await.map_err(|e| e.to_string())
}

/// The schedule's period (`SYNC_SCHEDULE_SECONDS`, default 60) for `perch-local`.
pub fn schedule_from_env() -> Option<Duration> {
    let secs = std::env::var("SYNC_SCHEDULE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Starts the loop when the sync queue is configured; the schedule's turn every `every`.
pub fn spawn(
    app: Arc<AppState<Aws>>,
    sdk: &aws_config::SdkConfig,
    settings: SyncSettings,
    every: Option<Duration>,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = app.config.sync_queue_url.clone()?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Some(tokio::spawn(async move {
        let mut next_turn = every.map(|e| tokio::time::Instant::now() + e);
        loop {
            if let (Some(at), Some(e)) = (next_turn, every)
                && tokio::time::Instant::now() >= at
            {
                if let Err(e) = schedule(&app).await {
                    tracing::error!(error = %e, "local sync schedule failed");
                }
                next_turn = Some(tokio::time::Instant::now() + e);
            }
            if let Err(e) = poll_once(&app, &settings, &sqs, &url, 1).await {
                tracing::warn!(error = %e, "local sync queue not read; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }))
}

/// One receive (long-polled for `wait_seconds`) and its batch, handled: how many messages.
pub async fn poll_once(
    app: &AppState<Aws>,
    settings: &SyncSettings,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    wait_seconds: i32,
) -> Result<usize, String> {
    let got = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        .send()
        .await
        .map_err(|e| format!("ReceiveMessage: {e}"))?;
    let messages = got.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let records: Vec<SqsMessage> = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    let worker = Worker { app, settings: settings.clone() };
    let out = sync_worker::handle(&worker, LambdaEvent::new(Invocation::Sqs(event), context()))
        .await
        .map_err(|e| e.to_string())?;
    let failed: Vec<&str> = out["batchItemFailures"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["itemIdentifier"].as_str()).collect())
        .unwrap_or_default();
    for m in &messages {
        if m.message_id.as_deref().is_some_and(|id| failed.contains(&id)) {
            continue;
        }
        if let Some(handle) = &m.receipt_handle {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|e| format!("DeleteMessage: {e}"))?;
        }
    }
    Ok(messages.len())
}
