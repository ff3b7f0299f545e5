//! The status sweep at scale: the `check-connection-status` binary handed one SQS work item
//! covering the whole table, as the deployed fan-out would with one segment.
//!
//! The table is synthetic (see [`crate::aws::AwsEndpoint::synthesize`]): 10,000 or 1,000,000
//! connections made from the recorded ones, so its size costs nothing but the sweep's own
//! work. Each check is real: a KMS `Decrypt` and a DynamoDB `UpdateItem` through the SDK
//! (replayed), and an `/introspect` at the Finch emulator over HTTP.

use std::time::{Duration, Instant};

use perch_tests::TestStack;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{BoxError, Subject, aws, environment, invoke_within, procfs, runtime_api, scenarios, spawn};

/// One sweep run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SweepRun {
    pub label: String,
    pub connections: u64,
    pub finch_latency_ms: u64,
    pub in_flight: u32,
    pub seconds: f64,
    pub checks_per_second: f64,
    /// Finch requests the sweep made (checks plus retries).
    pub finch_requests: u64,
    /// 429s the emulator answered.
    pub rate_limited: u64,
    /// With limits: the configured budget (requests/s) and the share of it achieved.
    pub budget_per_second: Option<f64>,
    pub budget_share: Option<f64>,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

struct Case {
    label: &'static str,
    n: u64,
    latency_ms: u64,
    in_flight: u32,
    /// Finch's IP limit enforced with time compressed ×150 (1,000 per 2 s), and the sweep's
    /// budget set to match (900 per 2 s).
    limits: bool,
}

pub async fn run(
    smoke: bool,
    subject: &Subject,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<Vec<SweepRun>, BoxError> {
    let small = if smoke { 1_000 } else { 10_000 };
    let mut cases = vec![
        Case { label: "Finch at 0 ms", n: small, latency_ms: 0, in_flight: 64, limits: false },
        Case { label: "Finch at 100 ms", n: small, latency_ms: 100, in_flight: 64, limits: false },
        Case { label: "Finch's limits enforced (time ×150)", n: small, latency_ms: 0, in_flight: 16, limits: true },
    ];
    if !smoke {
        cases.insert(
            1,
            Case { label: "Finch at 0 ms, 1,000,000", n: 1_000_000, latency_ms: 0, in_flight: 64, limits: false },
        );
    }
    let mut out = Vec::new();
    for case in cases {
        let r = run_case(&case, subject, stack, aws).await?;
        eprintln!(
            "sweep {:<38} {:>9} connections in {:>7.1} s: {:>6.0}/s, 429s {}, cpu {:.1} s, peak RSS {} KiB",
            r.label, r.connections, r.seconds, r.checks_per_second, r.rate_limited, r.cpu_seconds, r.peak_rss_kib
        );
        out.push(r);
    }
    Ok(out)
}

async fn run_case(
    case: &Case,
    subject: &Subject,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<SweepRun, BoxError> {
    let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(900)).await?;
    let mut env = environment(stack, aws, &api.addr, &subject.name);
    let window = if case.limits { ("900", "2") } else { ("1000000", "1") };
    for (k, v) in [
        ("SWEEP_IN_FLIGHT", case.in_flight.to_string()),
        ("SWEEP_BUDGET_REQUESTS", window.0.to_owned()),
        ("SWEEP_BUDGET_WINDOW_SECONDS", window.1.to_owned()),
        // The sweep's own engine at compressed time, as G7/G8 have measured it; the windows it
        // shares with the sync workers (two DynamoDB calls per check) count real seconds.
        ("SWEEP_SHARED_BUDGET", "false".to_owned()),
    ] {
        env.retain(|(key, _)| key != k);
        env.push((k.to_owned(), v));
    }
    let mut child = spawn(subject, &env)?;
    let pid = child.id().ok_or("no pid")?;
    api.wait_next(Duration::from_secs(10)).await?;

    // Record one real round (from moto) to make the synthetic table from: every connection the
    // earlier scenarios left in the table, each through moto, so give it time.
    let mut scenario = scenarios::Scenario::prepare("check-connection-status", stack).await;
    stack.finch.shared.world().requests.clear();
    aws.record();
    let warm_up = scenario.event(stack, 0).await;
    let (answer, _, _) = invoke_within(&mut api, pid, &warm_up, Duration::from_secs(300)).await?;
    if !scenario.succeeded(&answer) {
        return Err(format!("sweep warm-up answered {answer}").into());
    }
    aws.replay();
    aws.synthesize(Some(case.n));
    aws.reset_counts();
    {
        let mut w = stack.finch.shared.world();
        w.faults.clear();
        if case.latency_ms > 0 {
            w.faults.push(serde_json::from_value(json!({"path": "/introspect", "latency_ms": case.latency_ms}))?);
        }
        w.rate_limits = case
            .limits
            .then(|| serde_json::from_value(json!({"ip_limit": 1000, "ip_window_ms": 2000, "penalty_ms": 60000})))
            .transpose()?;
        w.rate_state = Default::default();
        // The emulator keeps every request; a million of them is the harness's memory, not the sweep's.
        w.requests.clear();
    }
    let event = scenario.event(stack, 1).await;
    let cpu_before = procfs::cpu(pid);
    let started = Instant::now();
    // Up to the function's own deadline (900 s here, Lambda's maximum): a million checks take
    // minutes, not the 30 s an API invocation is given.
    let (answer, _, _) = invoke_within(&mut api, pid, &event, Duration::from_secs(910)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = procfs::cpu(pid).saturating_sub(cpu_before).as_secs_f64();
    let peak_rss_kib = procfs::peak_rss_kib(pid);
    child.kill().await?;
    aws.synthesize(None);
    let rate_limited = {
        let mut w = stack.finch.shared.world();
        w.faults.clear();
        w.rate_limits = None;
        w.requests.clear();
        w.rate_state.rejected
    };
    if !scenario.succeeded(&answer) {
        return Err(format!("sweep run {} answered {answer}", case.label).into());
    }
    let (counts, _) = aws.counts();
    let finch_requests = counts.get("finch:GET /introspect").copied().unwrap_or(0);
    let checks_per_second = case.n as f64 / seconds;
    let budget = case.limits.then_some(450.0);
    Ok(SweepRun {
        label: case.label.to_owned(),
        connections: case.n,
        finch_latency_ms: case.latency_ms,
        in_flight: case.in_flight,
        seconds,
        checks_per_second,
        finch_requests,
        rate_limited,
        budget_per_second: budget,
        budget_share: budget.map(|b| finch_requests as f64 / seconds / b),
        cpu_seconds,
        peak_rss_kib,
    })
}
