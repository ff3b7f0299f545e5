//! The status sweep's Lambda (see `perch::flows::sweep` for the design and its bound).
//!
//! - Invoked by the EventBridge schedule: plans a round, one SQS message per scan segment.
//! - Invoked by SQS: runs each message's segment until done or near the deadline, hands the
//!   rest back to the queue, and reports failed messages as partial-batch failures.
//!
//! A failed planning run returns `Err`, so Lambda's error metrics and retries apply.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Diagnostic, LambdaEvent};
use perch::app::Adapters;
use perch::flows::sweep::{self, Pacer, SegmentWork, SweepSettings, WorkQueue};
use perch::runtime::Service;
use perch::{AppState, Error};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The services this function calls besides DynamoDB: their clients are built in init; a test
/// checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::EventBridge, Service::Finch];

/// What invokes the sweep: an SQS batch of work items, or the schedule.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Invocation {
    Sqs(SqsEvent),
    Schedule(EventBridgeEvent),
}

/// The state and settings the sweep needs; built once per container.
pub struct Sweeper<'a, A: Adapters> {
    pub app: &'a AppState<A>,
    pub settings: SweepSettings,
    /// The queue of work items (`SWEEP_QUEUE_URL`); without one a round runs inline.
    pub queue: Option<Box<dyn WorkQueue>>,
}

impl<'a, A: Adapters> Sweeper<'a, A> {
    pub fn new(app: &'a AppState<A>, settings: SweepSettings, queue: Option<Box<dyn WorkQueue>>) -> Self {
        Self { app, settings, queue }
    }
}

/// A run that failed as a whole (Lambda records it as an error), with its cause.
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

/// Handles a scheduled event or an SQS batch.
pub async fn handle<A: Adapters>(s: &Sweeper<'_, A>, event: LambdaEvent<Invocation>) -> Result<Value, SweepFailed> {
    // A deadline already past leaves no time: nothing is started, the rest is handed back.
    let remaining = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + remaining;
    match event.payload {
        Invocation::Sqs(batch) => {
            let response = run_batch(s, batch.records, deadline).await;
            serde_json::to_value(response).map_err(|e| SweepFailed(format!("batch response not serialisable: {e}")))
        }
        Invocation::Schedule(_) => plan(s, deadline).await.map_err(|e| {
            tracing::error!(error = %e.chain(), "status sweep planning failed");
            SweepFailed(e.chain())
        }),
    }
}

async fn plan<A: Adapters>(s: &Sweeper<'_, A>, deadline: tokio::time::Instant) -> Result<Value, Error> {
    let work = sweep::plan(&s.settings, OffsetDateTime::now_utc());
    match &s.queue {
        Some(queue) => {
            queue.send(&work).await?;
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

async fn run_batch<A: Adapters>(
    s: &Sweeper<'_, A>,
    records: Vec<SqsMessage>,
    deadline: tokio::time::Instant,
) -> SqsBatchResponse {
    let pacer = Pacer::new(s.settings.slot());
    let mut response = SqsBatchResponse::default();
    for r in records {
        // SQS always sets it; without one the failure cannot be named, and reporting "" makes
        // Lambda retry the whole batch — the safe side.
        let id = r.message_id.clone().unwrap_or_default();
        if let Err(e) = run_one(s, &pacer, r.body.as_deref(), deadline).await {
            tracing::error!(message_id = %id, error = %e.chain(), "status sweep work item failed; SQS will retry it");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

async fn run_one<A: Adapters>(
    s: &Sweeper<'_, A>,
    pacer: &Pacer,
    body: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<(), Error> {
    // No body is no work item: refused below like any other.
    let work: SegmentWork = serde_json::from_str(body.unwrap_or_default())
        .map_err(|e| Error::invalid("invalid_work", format!("not a sweep work item: {e}")))?;
    let report = sweep::run_segment(s.app, &s.settings, pacer, work, deadline).await?;
    if let Some(next) = report.next {
        let queue = s.queue.as_ref().ok_or_else(|| Error::internal("SWEEP_QUEUE_URL is not set"))?;
        queue.send(&[next]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use perch::memory::{MemoryQueue, sample_config, sample_secret};

    use super::*;

    fn app() -> AppState<perch::memory::Memory> {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap().0
    }

    fn settings(queue: bool) -> SweepSettings {
        SweepSettings::from_lookup(|k| match k {
            "SWEEP_SEGMENTS" => Some("3".to_owned()),
            "SWEEP_QUEUE_URL" if queue => Some("memory".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    fn event(payload: Value) -> LambdaEvent<Invocation> {
        let mut ctx = lambda_runtime::Context::default();
        let in_a_minute = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        ctx.deadline = u64::try_from(in_a_minute.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
        LambdaEvent::new(serde_json::from_value(payload).unwrap(), ctx)
    }

    /// A queue the test can still read after the sweeper took its box.
    struct Shared(std::sync::Arc<MemoryQueue>);

    #[async_trait::async_trait]
    impl WorkQueue for Shared {
        async fn send(&self, work: &[SegmentWork]) -> Result<(), Error> {
            self.0.send(work).await
        }
    }

    #[tokio::test]
    async fn the_schedule_plans_one_work_item_per_segment_onto_the_queue() {
        let app = app();
        let queue = std::sync::Arc::new(MemoryQueue::default());
        let s = Sweeper::new(&app, settings(true), Some(Box::new(Shared(queue.clone()))));
        let scheduled = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        let out = handle(&s, event(scheduled)).await.unwrap();
        assert_eq!(out["planned"], 3);
        let sent = queue.sent();
        assert_eq!(sent.iter().map(|w| w.segment).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn without_a_queue_the_schedule_sweeps_inline() {
        let app = app();
        let s = Sweeper::new(&app, settings(false), None);
        let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(handle(&s, event(scheduled)).await.unwrap()["checked"], 0);
    }

    #[tokio::test]
    async fn an_sqs_batch_reports_exactly_its_failed_messages() {
        let app = app();
        let s = Sweeper::new(&app, settings(true), Some(Box::new(MemoryQueue::default())));
        let good = serde_json::to_string(&sweep::plan(&s.settings, OffsetDateTime::now_utc())[0]).unwrap();
        let batch = json!({"Records": [
            {"messageId": "m-good", "body": good},
            {"messageId": "m-bad", "body": "not a work item"},
        ]});
        let out = handle(&s, event(batch)).await.unwrap();
        assert_eq!(out, json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]}));
    }

    #[tokio::test]
    async fn a_payload_that_is_neither_is_refused_by_the_runtime() {
        let neither = json!({"hello": "world"});
        assert!(serde_json::from_value::<Invocation>(neither).is_err());
    }
}
