//! Status events read back off the bus (issue 15, item 5): on the local stack Perch publishes
//! to an EventBridge bus in moto, a rule on that bus delivers to an SQS queue, and the test
//! reads every event of a connection's life from the queue and checks its content — what an
//! app subscribing to Perch's bus would receive.

use std::collections::HashMap;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use perch_tests::TestStack;
use serde_json::{Value, json};

/// A bus with a rule that sends Perch's events to a fresh queue; the bus name and queue URL.
async fn bus_to_queue() -> (String, String, aws_sdk_sqs::Client) {
    let sdk = perch_tests::sdk_config().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let bus = format!("perch-events-{run}");
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    events.create_event_bus().name(&bus).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs.create_queue().queue_name(format!("perch-events-{run}")).send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let attributes =
        sqs.get_queue_attributes().queue_url(&queue_url).attribute_names(QueueAttributeName::QueueArn).send().await;
    let queue_arn = attributes.unwrap().attributes().unwrap()[&QueueAttributeName::QueueArn].clone();
    let pattern = json!({"source": [perch::events::SOURCE], "detail-type": [perch::events::DETAIL_TYPE]});
    events.put_rule().name("to-queue").event_bus_name(&bus).event_pattern(pattern.to_string()).send().await.unwrap();
    let target = Target::builder().id("queue").arn(queue_arn).build().unwrap();
    events.put_targets().rule("to-queue").event_bus_name(&bus).targets(target).send().await.unwrap();
    (bus, queue_url, sqs)
}

/// The next `n` events on the queue (long polls, so no sleeping), as EventBridge envelopes.
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..20 {
        if out.len() >= n {
            break;
        }
        let got = sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).wait_time_seconds(1);
        for m in got.send().await.unwrap().messages() {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message().queue_url(queue_url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    out
}

#[tokio::test]
async fn every_status_change_of_a_connection_reaches_the_bus_with_its_content() {
    let (bus, queue_url, sqs) = bus_to_queue().await;
    let stack = TestStack::start_with(|env| {
        env.insert("EVENT_BUS_NAME", bus.clone());
    })
    .await;
    stack.enable_webhooks().await;
    let token = stack.token("acme");

    // Connected, flagged by Finch, reconnected, disconnected.
    let id = stack.connect("acme").await;
    stack.flip(&id, "reauth").await;
    let s: Value = stack
        .post_json(&format!("/connections/{id}/reauthenticate"), Some(&token), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let cb = perch_tests::location(&stack.login_at_finch(s["connect_url"].as_str().unwrap()).await);
    assert_eq!(stack.get(&cb, None).await.status(), 302);
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let events = receive(&sqs, &queue_url, 4).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let mut seen: Vec<(String, Value, String)> = Vec::new();
    for e in &events {
        assert_eq!(e["source"], perch::events::SOURCE);
        assert_eq!(e["detail-type"], perch::events::DETAIL_TYPE);
        let d = &e["detail"];
        assert_eq!(d["connection_id"], id.as_str());
        assert_eq!(d["customer_id"], "acme");
        assert_eq!(d["provider_id"], "gusto");
        assert!(
            time::OffsetDateTime::parse(
                d["observed_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        assert!(!e.to_string().contains("token"), "no token, ciphertext or key in an event: {e}");
        seen.push((
            d["source"].as_str().unwrap().to_owned(),
            d["previous_status"].clone(),
            d["status"].as_str().unwrap().to_owned(),
        ));
    }
    // Delivery order is not guaranteed; each change is there exactly once.
    let by_source: HashMap<&str, (&Value, &str)> =
        seen.iter().map(|(source, previous, status)| (source.as_str(), (previous, status.as_str()))).collect();
    assert_eq!(by_source.len(), 4, "{seen:?}");
    assert_eq!(by_source["connect"], (&Value::Null, "connected"));
    assert_eq!(by_source["webhook"], (&json!("connected"), "reauth"));
    assert_eq!(by_source["reauthenticate"], (&json!("reauth"), "connected"));
    assert_eq!(by_source["disconnect"], (&json!("connected"), "disconnected"));
}
