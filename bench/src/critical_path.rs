//! G11: the redirect callback as the employer feels it (PERFORMANCE.md). The callback runs as
//! shipped under the Runtime API emulator, its remote calls answered as slowly as on AWS —
//! Finch 150 ms a call, DynamoDB 5 ms, KMS 8 ms, anything else 5 ms ([`aws::Latency`]) — and
//! its wall time is compared with its **critical path**: the chain of calls that must follow
//! one another whatever the code does.
//!
//! That chain, for a callback that stores a connection: consume the state (DynamoDB: the
//! flow it names is needed to mark the code), mark the code (DynamoDB: before anything reaches
//! Finch), exchange it (Finch: everything after needs the token), one more Finch round trip
//! (`/introspect` and `/employer/company`, which need the token; the owner's lookup, the KMS
//! encryption and the stored connection's read fit inside it), the save (one DynamoDB
//! transaction: it needs all of the above), and the status event when a bus is configured. So
//! `3 × DynamoDB + 2 × Finch (+ the event)`: 315 ms here (the harness sets no bus). Target:
//! wall ≤ 1.1 × that.

use std::time::Duration;

use perch_tests::TestStack;
use serde::Serialize;

use crate::aws::{AwsEndpoint, Latency};
use crate::stats::{Summary, summarize};
use crate::{BoxError, MILLIS, Subject, environment, invoke, runtime_api, scenarios, spawn};

/// The latencies G11 names.
pub const LATENCY: Latency = Latency { finch_ms: 150, dynamodb_ms: 5, kms_ms: 8, other_ms: 5 };

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct CriticalPath {
    pub binary: String,
    pub latency: Latency,
    /// The critical path's length for the calls the callback made, in ms.
    pub bound_ms: f64,
    pub wall_ms: Summary,
    /// Median wall time over the bound.
    pub ratio_p50: f64,
    pub ratio_p90: f64,
    /// Remote calls per invocation, by operation.
    pub calls_per_invocation: std::collections::BTreeMap<String, f64>,
    pub failures: usize,
}

/// Runs `invocations` redirect callbacks of `subject` with [`LATENCY`].
pub async fn run(
    subject: &Subject,
    stack: &TestStack,
    aws: &AwsEndpoint,
    invocations: usize,
) -> Result<CriticalPath, BoxError> {
    let mut scenario = scenarios::Scenario::prepare("oauth-callback", stack).await;
    let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
    let env = environment(stack, aws, &api.addr, &subject.name);
    let mut child = spawn(subject, &env)?;
    let pid = child.id().ok_or("no pid")?;
    api.wait_next(Duration::from_secs(10)).await?;
    // Two warm-ups through to moto, at full speed; the second one's answers are replayed.
    for w in 0..2 {
        aws.record();
        let event = scenario.event(stack, w).await;
        let (answer, _, _) = invoke(&mut api, pid, &event).await?;
        if !scenario.succeeded(&answer) {
            return Err(format!("critical path: warm-up {w} answered {answer}").into());
        }
    }
    aws.replay();
    aws.reset_counts();
    aws.set_latency(Some(LATENCY));
    let (mut walls, mut failures) = (Vec::new(), 0);
    for i in 0..invocations {
        let event = scenario.event(stack, i + 2).await;
        aws.next_invocation();
        let (answer, wall, _) = invoke(&mut api, pid, &event).await?;
        if !scenario.succeeded(&answer) {
            failures += 1;
            if failures == 1 {
                eprintln!("critical path: invocation {i} answered {answer}");
            }
        }
        walls.push(wall);
    }
    aws.set_latency(None);
    child.kill().await?;
    let (counts, misses) = aws.counts();
    if misses > 0 {
        return Err(format!("critical path: {misses} AWS requests had no recorded answer").into());
    }
    let n = invocations.max(1) as f64;
    let calls_per_invocation: std::collections::BTreeMap<String, f64> =
        counts.into_iter().map(|(k, v)| (k, v as f64 / n)).collect();
    let event = calls_per_invocation.get("AWSEvents.PutEvents").is_some_and(|c| *c > 0.0);
    let bound_ms = (3 * LATENCY.dynamodb_ms + 2 * LATENCY.finch_ms + if event { LATENCY.other_ms } else { 0 }) as f64;
    let wall_ms = summarize(&walls, MILLIS);
    Ok(CriticalPath {
        binary: subject.program.display().to_string(),
        latency: LATENCY,
        bound_ms,
        ratio_p50: wall_ms.p50 / bound_ms,
        ratio_p90: wall_ms.p90 / bound_ms,
        wall_ms,
        calls_per_invocation,
        failures,
    })
}
