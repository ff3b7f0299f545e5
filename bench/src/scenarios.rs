//! What each function is asked to do, invocation after invocation: the warm path a deployed
//! Perch serves most, as the event Lambda would deliver (API Gateway HTTP API payload v2, or
//! an SQS batch for the sweep).
//!
//! The events are prepared by the harness on the test stack (`perch_tests::TestStack`: moto,
//! the Finch emulator, Perch's routes in process), outside the measured window.

use std::collections::HashMap;

use perch_tests::TestStack;
use serde_json::{Value, json};

/// The scenarios: a function's binary name, or [`LIST_ONE`].
pub const FUNCTIONS: &[&str] = &[
    LIST_ONE,
    "list-connections",
    "create-connect-session",
    "oauth-callback",
    "create-reauth-session",
    "disconnect",
    "finch-webhook",
    "check-connection-status",
];

/// An API Gateway HTTP API (payload v2) event, as the JWT authorizer passes it on.
pub fn http_event(
    method: &str,
    route: &str,
    path: &str,
    query: &[(&str, &str)],
    customer: Option<&str>,
    headers: &[(&str, String)],
    body: Option<String>,
) -> Value {
    let raw_query: String =
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query.iter().copied()).finish();
    let mut hs: HashMap<String, String> = headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    hs.insert("host".into(), "api.example.com".into());
    if body.is_some() {
        hs.entry("content-type".into()).or_insert_with(|| "application/json".into());
    }
    let mut ctx = json!({
        "routeKey": format!("{method} {route}"), "accountId": "123456789012", "stage": "$default",
        "requestId": "bench", "apiId": "bench", "domainName": "api.example.com", "domainPrefix": "api",
        "time": "24/Nov/2026:00:00:00 +0000", "timeEpoch": 1_795_478_400_000_u64,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "bench"}
    });
    if let Some(c) = customer {
        ctx["authorizer"] = json!({"jwt": {"claims": {"customer_id": c, "sub": "bench"}, "scopes": null}});
    }
    let mut e = json!({
        "version": "2.0", "routeKey": format!("{method} {route}"), "rawPath": path, "rawQueryString": raw_query,
        "headers": hs, "requestContext": ctx, "body": body, "isBase64Encoded": false,
    });
    if !query.is_empty() {
        e["queryStringParameters"] =
            json!(query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>());
    }
    if let Some(id) = route.contains("{id}").then(|| path.split('/').nth(2)).flatten() {
        e["pathParameters"] = json!({ "id": id });
    }
    e
}

/// State a function's scenario keeps between invocations.
pub struct Scenario {
    pub function: &'static str,
    /// The connection the lifecycle functions work on.
    connection: String,
    /// The secret Finch signs webhooks with.
    webhook_secret: String,
    /// The connection the disconnect scenario's invocations name.
    disconnecting: Option<String>,
}

/// The customer whose connections the scenarios use (20 of them, as a listing would show).
pub const CUSTOMER: &str = "bench";

/// `list-connections` for a customer with one connection: one DynamoDB read returning one
/// item, the API handler PERFORMANCE.md's G2 and G4 are set for.
pub const LIST_ONE: &str = "list-connections-1";
const LIST_ONE_CUSTOMER: &str = "bench-one";

/// The binary a scenario runs.
pub fn binary(scenario: &str) -> &str {
    if scenario == LIST_ONE { "list-connections" } else { scenario }
}

impl Scenario {
    pub async fn prepare(function: &'static str, stack: &TestStack) -> Self {
        let customer = if function == LIST_ONE { LIST_ONE_CUSTOMER } else { CUSTOMER };
        let connection = stack.seed(customer, 1).await.remove(0);
        let webhook_secret = stack.enable_webhooks().await;
        Self { function, connection, webhook_secret, disconnecting: None }
    }

    /// The event for the next invocation (harness work, not measured).
    pub async fn event(&mut self, stack: &TestStack, i: usize) -> Value {
        match self.function {
            "list-connections" => http_event("GET", "/connections", "/connections", &[], Some(CUSTOMER), &[], None),
            LIST_ONE => http_event("GET", "/connections", "/connections", &[], Some(LIST_ONE_CUSTOMER), &[], None),
            "create-connect-session" => http_event(
                "POST",
                "/connect/sessions",
                "/connect/sessions",
                &[],
                Some("bench-sessions"),
                &[],
                Some(json!({"products": ["company", "directory"], "customer_name": "Bench Inc."}).to_string()),
            ),
            "oauth-callback" => {
                // A fresh Connect flow each time (after the first, a reauthentication of the
                // same connection): Finch redirects with a new code and state.
                let cb = stack.callback_url_for("bench-callback", json!({"products": ["company"]})).await;
                let code = perch_tests::query(&cb, "code").unwrap_or_default();
                let state = perch_tests::query(&cb, "state").unwrap_or_default();
                http_event(
                    "GET",
                    "/connect/callback",
                    "/connect/callback",
                    &[("code", &code), ("state", &state)],
                    None,
                    &[],
                    None,
                )
            }
            "create-reauth-session" => {
                let path = format!("/connections/{}/reauthenticate", self.connection);
                http_event(
                    "POST",
                    "/connections/{id}/reauthenticate",
                    &path,
                    &[],
                    Some(CUSTOMER),
                    &[],
                    Some("{}".into()),
                )
            }
            "disconnect" => {
                // A fresh connection for each recorded warm-up; the replayed answers then name
                // the second one, whose token `after` restores at the emulator, so every run
                // takes the full path. Seeding one per invocation would grow the table the
                // sweep scenario scans by 10,000 connections.
                if i < 2 || self.disconnecting.is_none() {
                    self.disconnecting = stack.seed(CUSTOMER, 1).await.pop();
                }
                let id = self.disconnecting.clone().unwrap_or_default();
                http_event("DELETE", "/connections/{id}", &format!("/connections/{id}"), &[], Some(CUSTOMER), &[], None)
            }
            "finch-webhook" => {
                let status = if i.is_multiple_of(2) { "reauth" } else { "connected" };
                let body = json!({"connection_id": self.connection, "company_id": "c", "account_id": "a", "entity_id": null,
                                  "event_type": "account.updated", "data": {"status": status, "authentication_method": "credential"}})
                .to_string();
                let id = finch_emulator::webhooks::new_event_id();
                let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                let sig = finch_emulator::webhooks::sign(&self.webhook_secret, &id, ts, &body).unwrap_or_default();
                let headers = [("finch-event-id", id), ("finch-timestamp", ts.to_string()), ("finch-signature", sig)];
                http_event("POST", "/finch/webhooks", "/finch/webhooks", &[], None, &headers, Some(body))
            }
            _ => {
                // The whole table as one segment, in a round starting now: every connection is due.
                let work = perch::flows::sweep::SegmentWork {
                    segment: 0,
                    total: 1,
                    start: None,
                    round_started: time::OffsetDateTime::now_utc(),
                };
                let body = serde_json::to_string(&work).unwrap_or_default();
                json!({"Records": [{"messageId": format!("m-{i}"), "body": body, "eventSource": "aws:sqs"}]})
            }
        }
    }

    /// Undo what an invocation did at Finch that would change the next one's path.
    pub fn after(&self, stack: &TestStack) {
        if self.function == "disconnect" {
            let mut w = stack.finch.shared.world();
            for t in w.tokens.values_mut() {
                t.revoked = false;
            }
            for c in w.connections.values_mut() {
                c.disconnected = false;
            }
        }
    }

    /// Whether the function's answer is the success this scenario expects.
    pub fn succeeded(&self, answer: &Value) -> bool {
        let status = answer["statusCode"].as_u64().unwrap_or(0);
        match self.function {
            "check-connection-status" => answer["batchItemFailures"] == json!([]),
            "create-connect-session" | "create-reauth-session" => status == 201,
            "oauth-callback" => {
                status == 302 && answer["headers"]["location"].as_str().is_some_and(|l| !l.contains("error"))
            }
            "disconnect" => status == 204,
            _ => status == 200,
        }
    }
}
