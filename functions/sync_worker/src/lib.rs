//! The sync workers' Lambda (see `perch::flows::sync` for the design).
//!
//! - Invoked by SQS: each message is one connection's run (or the rest of one, or a purge);
//!   a run the deadline cut or a 429 paused is sent back to the queue with its delay; a failed
//!   message is reported as a partial-batch failure so SQS retries only it (and, after its
//!   `maxReceiveCount`, parks it on the dead-letter queue, which has an alarm).
//! - Invoked by the EventBridge schedule: sends every entity whose next attempt is due (a
//!   retry after a 202 or a failure, Finch's next daily or weekly refresh) to the queue.
//!
//! The queue's maximum concurrency bounds the workers; the one Finch budget they share
//! (`perch::flows::budget`) keeps them all inside Finch's limits however many run.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Diagnostic, LambdaEvent};
use perch::app::Adapters;
use perch::flows::sync::{self, RunOutcome, SyncQueue, SyncSettings, SyncWork};
use perch::runtime::Service;
use perch::{AppState, Error};
use serde::Deserialize;
use serde_json::{Value, json};

/// The services this function calls besides DynamoDB: their clients are built in init; a test
/// checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::EventBridge, Service::Finch, Service::Sqs];

/// Connections one scheduled turn sends at most (the next turn sends the rest).
const PLAN_LIMIT: usize = 5_000;

/// What invokes the worker: an SQS batch, or the schedule.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Invocation {
    Sqs(SqsEvent),
    Schedule(EventBridgeEvent),
}

/// The state and settings of one container.
pub struct Worker<'a, A: Adapters> {
    pub app: &'a AppState<A>,
    pub settings: SyncSettings,
}

/// A scheduled turn that failed as a whole (Lambda records it as an error).
#[derive(Debug)]
pub struct PlanFailed(String);

impl std::fmt::Display for PlanFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanFailed {}

impl From<PlanFailed> for Diagnostic {
    fn from(e: PlanFailed) -> Self {
        Diagnostic { error_type: "SyncPlanFailed".into(), error_message: e.0 }
    }
}

/// Handles an SQS batch or a scheduled event.
pub async fn handle<A: Adapters>(w: &Worker<'_, A>, event: LambdaEvent<Invocation>) -> Result<Value, PlanFailed> {
    let remaining = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + remaining;
    match event.payload {
        Invocation::Sqs(batch) => {
            let response = run_batch(w, batch.records, deadline).await;
            serde_json::to_value(response).map_err(|e| PlanFailed(format!("batch response not serialisable: {e}")))
        }
        Invocation::Schedule(_) => {
            let queue = w.app.sync_queue.as_deref().ok_or_else(|| PlanFailed("SYNC_QUEUE_URL is not set".into()))?;
            let now = w.app.clock.now();
            match sync::plan_due(w.app, queue, now, PLAN_LIMIT).await {
                Ok(n) => {
                    tracing::info!(connections = n, "sync schedule planned");
                    Ok(json!({"planned": n}))
                }
                Err(e) => {
                    tracing::error!(error = %e.chain(), "sync schedule failed");
                    Err(PlanFailed(e.chain()))
                }
            }
        }
    }
}

async fn run_batch<A: Adapters>(
    w: &Worker<'_, A>,
    records: Vec<SqsMessage>,
    deadline: tokio::time::Instant,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for r in records {
        // SQS always sets it; without one the failure cannot be named, and reporting "" makes
        // Lambda retry the whole batch — the safe side.
        let id = r.message_id.clone().unwrap_or_default();
        if let Err(e) = run_one(w, r.body.as_deref(), deadline).await {
            tracing::error!(message_id = %id, error = %e.chain(), "sync work item failed; SQS will retry it");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

async fn run_one<A: Adapters>(
    w: &Worker<'_, A>,
    body: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<(), Error> {
    let work: SyncWork = serde_json::from_str(body.unwrap_or_default()).map_err(|e| {
        Error::invalid("invalid_work", format!("not a sync work item: line {} column {}", e.line(), e.column()))
    })?;
    match sync::run(w.app, &w.settings, &work, deadline).await? {
        RunOutcome::Continue { work, delay } => {
            let queue = w.app.sync_queue.as_deref().ok_or_else(|| Error::internal("SYNC_QUEUE_URL is not set"))?;
            queue.send(&[work], delay).await
        }
        RunOutcome::Busy { until } => {
            tracing::info!(connection_id = %work.connection_id, until = %until, "another run holds the connection; this one is folded into it");
            Ok(())
        }
        RunOutcome::Finished | RunOutcome::Gone => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    fn event(payload: Value) -> LambdaEvent<Invocation> {
        let mut ctx = lambda_runtime::Context::default();
        let in_a_minute = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        ctx.deadline = u64::try_from(in_a_minute.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
        LambdaEvent::new(serde_json::from_value(payload).unwrap(), ctx)
    }

    #[tokio::test]
    async fn a_batch_reports_exactly_its_failed_messages_and_the_schedule_plans() {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        let (app, _) = AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap();
        let w = Worker { app: &app, settings: SyncSettings::from_lookup(|_| None).unwrap() };
        // A connection Perch does not hold is done (nothing to sync); garbage is a failure.
        let gone = json!({"connection_id": "0b6f3c9e-8f6e-4a51-9d0a-2a3f5c7e9b10", "trigger": "webhook"}).to_string();
        let batch = json!({"Records": [
            {"messageId": "m-good", "body": gone},
            {"messageId": "m-bad", "body": "not a work item"},
        ]});
        let out = handle(&w, event(batch)).await.unwrap();
        assert_eq!(out, json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]}));
        let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(handle(&w, event(scheduled)).await.unwrap()["planned"], 0);
    }
}
