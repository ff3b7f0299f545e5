//! Webhooks as Finch sends them: `finch-event-id` (`msg_…`), `finch-timestamp` (unix seconds)
//! and `finch-signature: v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{body}`, keyed with
//! the base64-decoded secret (`docs/finch-contract.md`). Finch's own SDK verifies these signatures in
//! `tests/python`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Shared;

/// Where and with which secret to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub url: String,
    /// Standard base64, as Finch's dashboard shows it.
    pub secret: String,
}

/// The headers of one signed delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    pub event_id: String,
    pub timestamp: i64,
    pub signature: String,
}

/// Signs `body` as Finch would.
pub fn sign(secret: &str, event_id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let key = STANDARD.decode(secret.trim()).map_err(|_| "secret is not base64".to_owned())?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{event_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// A fresh Svix-style event id.
pub fn new_event_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// The `account.updated` payload for a connection's new status, or (`entity`) one entity's.
/// `entity_id` is null unless an entity is named (Finch: present for multi-entity connections).
pub fn account_updated(s: &Shared, connection_id: &str, status: &str, entity: Option<&str>) -> Option<Value> {
    let w = s.world();
    let c = w.connections.get(connection_id)?;
    Some(json!({
        "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": entity,
        "event_type": "account.updated",
        "data": {"status": status, "authentication_method": {"type": c.auth_type}},
    }))
}

/// The `company.updated` payload for a connection.
pub fn company_updated(s: &Shared, connection_id: &str) -> Option<Value> {
    let w = s.world();
    let c = w.connections.get(connection_id)?;
    Some(json!({
        "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": null,
        "event_type": "company.updated", "data": null,
    }))
}

/// A data-change event (`directory.created`, `employment.updated`, …): ids only, as Finch sends
/// them; `entity_id` is named for a connection of several entities.
pub fn data_changed(
    s: &Shared,
    connection_id: &str,
    entity: &str,
    event_type: &str,
    individual_id: &str,
) -> Option<Value> {
    let w = s.world();
    let c = w.connections.get(connection_id)?;
    let entity_id = c.is_multi_entity().then_some(entity);
    Some(json!({
        "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": entity_id,
        "event_type": event_type, "data": {"individual_id": individual_id},
    }))
}

/// `job.initial_data_sync_org.succeeded`: the connection's organization data is there.
pub fn initial_org_sync_succeeded(s: &Shared, connection_id: &str) -> Option<Value> {
    let w = s.world();
    let c = w.connections.get(connection_id)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    Some(json!({
        "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": null,
        "event_type": "job.initial_data_sync_org.succeeded",
        "data": {"job_id": job_id, "job_url": format!("https://api.tryfinch.com/jobs/automated/{job_id}")},
    }))
}

/// `payment.created` and `pay_statement.created` for a new payment (ids and the pay date only).
pub fn payment_changed(s: &Shared, connection_id: &str, entity: &str, payment_id: &str, pay_date: &str) -> Vec<Value> {
    let w = s.world();
    let Some(c) = w.connections.get(connection_id) else { return Vec::new() };
    let entity_id = c.is_multi_entity().then_some(entity);
    vec![
        json!({
            "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": entity_id,
            "event_type": "payment.created", "data": {"payment_id": payment_id, "pay_date": pay_date},
        }),
        json!({
            "connection_id": c.id, "company_id": c.company_id, "account_id": c.account_id(), "entity_id": entity_id,
            "event_type": "pay_statement.created", "data": {"payment_id": payment_id},
        }),
    ]
}

/// `job.initial_data_sync_payroll.succeeded`: the connection's pay data is there.
pub fn initial_payroll_sync_succeeded(s: &Shared, connection_id: &str) -> Option<Value> {
    let mut event = initial_org_sync_succeeded(s, connection_id)?;
    event["event_type"] = json!("job.initial_data_sync_payroll.succeeded");
    Some(event)
}

/// Delivers each payload in order; the statuses, in order.
pub async fn deliver_all(s: &Shared, payloads: Vec<Value>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for p in payloads {
        statuses.push(deliver(s, &p, None, None).await.0);
    }
    statuses
}

/// Signs and POSTs `payload` to the configured target; returns the HTTP status (or 0 when
/// nothing is configured or the target could not be reached) and the signed headers.
pub async fn deliver(
    s: &Shared,
    payload: &Value,
    event_id: Option<String>,
    timestamp: Option<i64>,
) -> (u16, Option<Signed>) {
    let (target, now) = {
        let w = s.world();
        (w.webhook.clone(), w.now().unix_timestamp())
    };
    let Some(target) = target else { return (0, None) };
    let body = payload.to_string();
    let event_id = event_id.unwrap_or_else(new_event_id);
    let timestamp = timestamp.unwrap_or(now);
    let Ok(signature) = sign(&target.secret, &event_id, timestamp, &body) else { return (0, None) };
    let status = reqwest::Client::new()
        .post(&target.url)
        .header("content-type", "application/json")
        .header("finch-event-id", &event_id)
        .header("finch-timestamp", timestamp.to_string())
        .header("finch-signature", &signature)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, Some(Signed { event_id, timestamp, signature }))
}
