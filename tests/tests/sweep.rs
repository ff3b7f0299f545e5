//! The status sweep on the local stack: pacing under the emulator's Finch limits, fan-out
//! through SQS (moto), resumption, and races with webhooks and re-authentication.

use perch::store::CheckConnections;
use std::time::Duration;

use perch::flows::sweep::{self, Pacer, SegmentReport, SweepSettings};
use perch_tests::{TestStack, captured_logs, location, query, sweep_settings};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

/// A whole round, inline (what the function does without a queue).
async fn sweep_all(stack: &TestStack, s: &SweepSettings) -> SegmentReport {
    let r = sweep::run_round(&stack.app, s, Instant::now() + Duration::from_secs(600)).await.unwrap();
    assert!(r.next.is_none());
    r
}

#[tokio::test]
async fn the_sweep_records_status_request_ids_and_tells_the_app() {
    let stack = TestStack::start().await;
    let ids = stack.seed("acme", 5).await;
    stack.finch.shared.world().connections.get_mut(&ids[0]).unwrap().status = "reauth".into();
    // A token revoked outside Perch (disconnected at Finch) answers 401.
    let revoked = ids[1].clone();
    for t in stack.finch.shared.world().tokens.values_mut().filter(|t| t.connection_id == revoked) {
        t.revoked = true;
    }

    let r = sweep_all(&stack, &sweep_settings(&[("SWEEP_IN_FLIGHT", "1")])).await;
    assert_eq!((r.checked, r.failed), (5, 0));
    assert_eq!(stack.stored_status(&ids[0]).await, "reauth");
    assert_eq!(stack.stored_status(&ids[1]).await, "disconnected");
    let statuses: Vec<String> = futures_util::future::join_all(ids.iter().map(|i| stack.stored_status(i))).await;
    assert_eq!(&statuses[2..], ["connected", "connected", "connected"]);

    let healthy = ids.iter().zip(&statuses).find(|(_, s)| *s == "connected").map(|(i, _)| i.clone()).unwrap();
    let item = stack.raw_connection(&healthy).await.unwrap();
    let rid = item["last_finch_request_id"].as_s().unwrap();
    assert!(stack.finch.requests().iter().any(|r| r.path == "/introspect" && &r.request_id == rid));
    assert!(item.contains_key("checked_at") && item.contains_key("last_successful_sync"));
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains(&ids[0]) && l.contains("connection status changed") && l.contains("status_check"))
    );
    // The listing shows when a connection was last checked.
    assert!(stack.list("acme").await.iter().all(|c| c["checked_at"].is_string()));
    // A second round finds nothing due.
    let again = sweep_all(&stack, &sweep_settings(&[])).await;
    assert_eq!((again.checked, again.finch_requests), (0, 0));
}

#[tokio::test]
async fn a_401_reauthenticate_user_also_means_reauth() {
    let stack = TestStack::start().await;
    let ids = stack.seed("acme", 1).await;
    stack.inject(json!({"path": "/introspect", "status": 401, "times": 1}));
    let r = sweep_all(&stack, &sweep_settings(&[])).await;
    assert_eq!((r.checked, r.changed), (1, 1));
    assert_eq!(stack.stored_status(&ids[0]).await, "reauth");
}

#[tokio::test]
async fn a_sweep_interrupted_mid_way_resumes_without_double_work() {
    let stack = TestStack::start().await;
    let ids = stack.seed("acme", 24).await;
    let s = sweep_settings(&[("SWEEP_SEGMENTS", "1"), ("SWEEP_IN_FLIGHT", "1"), ("SWEEP_PAGE_SIZE", "10")]);
    let pacer = Pacer::new(Duration::from_millis(40));
    let work = sweep::plan(&s, OffsetDateTime::now_utc()).remove(0);
    // The deadline comes after a handful of checks.
    let first =
        sweep::run_segment(&stack.app, &s, &pacer, work, Instant::now() + Duration::from_millis(300)).await.unwrap();
    let next = first.next.clone().expect("handed over the rest");
    assert!(first.checked > 0 && first.checked < 24, "{first:?}");
    let resumed =
        sweep::run_segment(&stack.app, &s, &pacer, next, Instant::now() + Duration::from_secs(120)).await.unwrap();
    assert!(resumed.next.is_none());
    assert_eq!(first.checked + resumed.checked, 24);
    assert_eq!(stack.finch_calls("GET", "/introspect"), 24, "each connection introspected exactly once");
    for id in &ids {
        assert!(stack.raw_connection(id).await.unwrap().contains_key("checked_at"));
    }
}

#[tokio::test]
async fn a_webhook_during_a_check_wins_over_the_checks_older_result() {
    let stack = TestStack::start().await;
    stack.enable_webhooks().await;
    let ids = stack.seed("acme", 1).await;
    let id = ids[0].clone();
    // Finch still says `connected` to the slow introspection; meanwhile a webhook says `reauth`.
    stack.inject(json!({"path": "/introspect", "latency_ms": 800, "times": 1}));
    let s = sweep_settings(&[("SWEEP_SEGMENTS", "1")]);
    let sweep = async { sweep_all(&stack, &s).await };
    let webhook = async {
        // Wait (bounded) until the introspection is in flight at the emulator.
        for _ in 0..400 {
            if stack.finch.requests().iter().any(|r| r.path == "/introspect" && r.status == 0) {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stack.flip(&id, "reauth").await
    };
    let (report, flipped) = tokio::join!(sweep, webhook);
    assert_eq!(flipped["webhook_status"], 200);
    assert_eq!(report.superseded, 1, "{report:?}");
    assert_eq!(stack.stored_status(&id).await, "reauth", "the newer webhook status stands");
}

#[tokio::test]
async fn a_reauthentication_during_a_check_is_not_overwritten() {
    let stack = TestStack::start().await;
    let id = stack.connect("acme").await;
    stack.finch.shared.world().connections.get_mut(&id).unwrap().status = "reauth".into();
    // Make Perch's record due, then read it as the sweep would.
    let rec = stack.record(&id).await;

    // The employer re-authenticates: the token is swapped (version bumped), status connected.
    let s = stack.post_json(&format!("/connections/{id}/reauthenticate"), Some(&stack.token("acme")), &json!({})).await;
    let s: Value = s.json().await.unwrap();
    let r = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await;
    let back = location(&stack.get(&location(&r), None).await);
    assert_eq!(query(&back, "outcome").as_deref(), Some("reauthenticated"));

    // The sweep's result from before the swap (`reauth`) must not land.
    let stale = perch::store::Observation {
        status: perch::domain::ConnectionStatus::Reauth,
        status_message: None,
        last_successful_sync: None,
        products: None,
        entities: None,
        employer: None,
        request_id: None,
        observed_at: OffsetDateTime::now_utc(),
    };
    assert!(!stack.app.store.record_check(&rec.connection_id, rec.version, &stale).await.unwrap());
    assert_eq!(stack.stored_status(&id).await, "connected");
}

#[tokio::test]
async fn retries_honour_retry_after_and_every_check_completes() {
    let stack = TestStack::start().await;
    stack.seed("acme", 6).await;
    // Three faults in all: even if one connection meets every one, its 4th attempt succeeds.
    stack.inject(json!({"path": "/introspect", "status": 429, "retry_after": 0, "times": 2}));
    stack.inject(json!({"path": "/introspect", "status": 502, "times": 1}));
    let r = sweep_all(&stack, &sweep_settings(&[("SWEEP_IN_FLIGHT", "2")])).await;
    assert_eq!((r.checked, r.failed), (6, 0));
    assert_eq!(r.rate_limited, 2);
    assert_eq!(r.finch_requests, 6 + 3);
    // A fourth consecutive failure gives up on that connection (and only that one).
    let more = stack.seed("globex", 1).await;
    stack.inject(json!({"path": "/introspect", "status": 503, "times": 4}));
    let r = sweep_all(&stack, &sweep_settings(&[])).await;
    assert_eq!((r.checked, r.failed, r.finch_requests), (0, 1, 4));
    assert_eq!(stack.stored_status(&more[0]).await, "connected");
}

#[tokio::test]
async fn the_scheduled_run_fans_out_over_sqs_and_hands_over_near_the_deadline() {
    let stack = TestStack::start().await;
    stack.seed("acme", 12).await;
    let sdk = perch_tests::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue =
        sqs.create_queue().queue_name(format!("perch-sweep-{}", uuid::Uuid::new_v4().simple())).send().await.unwrap();
    let url = queue.queue_url().unwrap().to_owned();
    let s = sweep_settings(&[("SWEEP_QUEUE_URL", &url), ("SWEEP_SEGMENTS", "4"), ("SWEEP_TIME_MARGIN_SECONDS", "0")]);
    let queue = perch::aws::sqs::SqsQueue::new(sqs.clone(), url.clone());
    let sweeper = check_connection_status::Sweeper::new(&stack.app, s, Some(Box::new(queue)));

    let event = |payload: Value, millis: u64| {
        let mut ctx = lambda_runtime::Context::default();
        ctx.deadline = (std::time::SystemTime::now() + Duration::from_millis(millis))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        lambda_runtime::LambdaEvent::new(serde_json::from_value(payload).unwrap(), ctx)
    };
    let scheduled = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let planned = check_connection_status::handle(&sweeper, event(scheduled, 60_000)).await.unwrap();
    assert_eq!(planned["planned"], 4);

    // Act as Lambda's SQS poller until the queue is drained.
    let mut batches = 0;
    loop {
        let got = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
        let msgs = got.messages().to_vec();
        if msgs.is_empty() {
            break;
        }
        batches += 1;
        assert!(batches < 50, "the sweep does not converge");
        let mut records: Vec<Value> = msgs
            .iter()
            .map(|m| json!({"messageId": m.message_id(), "body": m.body(), "eventSource": "aws:sqs"}))
            .collect();
        if batches == 1 {
            records.push(json!({"messageId": "poison", "body": "not json", "eventSource": "aws:sqs"}));
        }
        // The first batch gets too little time: its segments are handed back to the queue.
        let budget_ms = if batches == 1 { 1 } else { 60_000 };
        let out =
            check_connection_status::handle(&sweeper, event(json!({ "Records": records }), budget_ms)).await.unwrap();
        let failures: Vec<&str> = out["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap())
            .collect();
        if batches == 1 {
            assert_eq!(failures, vec!["poison"], "only the malformed message fails");
        } else {
            assert!(failures.is_empty(), "{failures:?}");
        }
        for m in &msgs {
            sqs.delete_message().queue_url(&url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    assert!(batches >= 2, "the first batch handed work back");
    assert_eq!(stack.finch_calls("GET", "/introspect"), 12, "every connection once, none twice");
}

#[tokio::test]
async fn each_segment_ends_with_the_json_line_the_templates_metric_filters_read() {
    let stack = TestStack::start().await;
    let ids = stack.seed("initech", 2).await;
    // One connection's checks keep failing (a 429 first, then 503s past the retries).
    stack.inject(json!({"path": "/introspect", "status": 429, "retry_after": 0, "times": 1}));
    stack.inject(json!({"path": "/introspect", "status": 503, "times": 3}));
    let r = sweep_all(&stack, &sweep_settings(&[("SWEEP_IN_FLIGHT", "1")])).await;
    assert_eq!((r.checked, r.failed, r.rate_limited), (1, 1, 1), "{ids:?}");
    // template.yaml: { $.fields.message = "status check segment done" && $.fields.failed > 0 },
    // metric value $.fields.failed (and likewise rate_limited): numbers, not strings.
    let summary = captured_logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "status check segment done")
        .find(|v| v["fields"]["failed"].as_u64() == Some(1) && v["fields"]["rate_limited"].as_u64() == Some(1));
    assert!(summary.is_some(), "no summary line with numeric failed and rate_limited");
}
