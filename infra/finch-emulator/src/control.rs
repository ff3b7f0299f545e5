//! `/_emulator/*`: what a test or a person needs to steer the emulator.
//!
//! - `POST /_emulator/connections/{id}/status {"status": "reauth", "entity_id"?}` — flip a
//!   connection, or one of its entities;
//! - `POST /_emulator/connections/{id}/company {"name"}` — the employer renamed its company:
//!   Finch then sends `company.updated`;
//! - `POST /_emulator/connections/{id}/people {"action": "hire", "fields"?} | {"action":
//!   "change", "individual_id", "fields"} | {"action": "terminate", "individual_id", "end_date"?}
//!   | {"action": "remove", "individual_id"}` (and `"entity_id"?`) — the employer's workforce
//!   changed: Finch then sends `directory.*`, `individual.*`, `employment.*` (ids only);
//! - `POST /_emulator/connections/{id}/employees {"size", "entity_id"?, "population"?: {"name",
//!   "offset"?}}` — a workforce of that many people, made anew (5, 500, 20,000: generated on
//!   read, see `people`); with a population, people shared with every roster drawn from the same
//!   name (an employer's other providers and entities), with each provider's flaws; with
//!   `"payroll": "biweekly"`, everyone paid biweekly in one pay group;
//! - `GET /_emulator/connections/{id}/truth?entity_id=` — who each `individual_id` is across
//!   rosters (the ground truth a person index is measured against);
//! - `POST /_emulator/connections/{id}/data_sync {"finch_code", "seconds"?}` — the data answers
//!   202 with that reason (for that long); `{"finch_code": null}` ends it and sends
//!   `job.initial_data_sync_org.succeeded`;
//! - `POST /_emulator/data_sync {"finch_code", "seconds"?}` — every connection made from now on
//!   starts in that 202 phase (for that long; `{"finch_code": null}`: new connections have data
//!   at once, the default);
//! - `POST /_emulator/connections/{id}/payroll {"pending_latest"?, "pending_payment_ids"?,
//!   "seconds"?, "entity_id"?}` — the statements of the latest N payments (or of those named)
//!   answer 202 inside the 200 (for that long); `{}` ends it and sends
//!   `job.initial_data_sync_payroll.succeeded`. `GET` with `?entity_id=` says what the payroll
//!   holds: payments, statements, first and last pay date;
//! - `GET /_emulator/connections` — every connection held;
//! - `POST /_emulator/faults {path?, method?, status?, latency_ms?, retry_after?, times?}`,
//!   `DELETE /_emulator/faults` — inject or clear faults;
//! - `POST /_emulator/clock {"advance_seconds": 601}` — move time forward (code expiry);
//! - `GET /_emulator/requests`, `GET /_emulator/violations` — what was seen;
//! - `POST /_emulator/rate_limits {ip_limit?, ip_window_ms?, penalty_ms?, product_limit?,
//!   slow_product_limit?, product_window_ms?}` (Finch's values by default: per product across
//!   all tokens, 20 a minute, 12 for payment and pay-statement; 1,000 per 5 minutes per IP),
//!   `DELETE`, `GET` (how many were refused);
//! - `POST /_emulator/webhooks {url, secret}` — where status changes are delivered, signed;
//! - `POST /_emulator/webhooks/send {payload, event_id?, timestamp?}` — deliver any event;
//! - `POST /_emulator/webhooks/sign {body, secret, event_id?, timestamp?}` — the headers only;
//! - `GET /_emulator/` — the same for a person: a dashboard of the connections with buttons
//!   that flip their status (the employer changed a password → `reauth`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use serde_json::Value;

use crate::Shared;
use crate::webhooks;
use crate::world::Fault;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/_emulator/connections", get(connections))
        .route("/_emulator/", get(crate::page::dashboard))
        .route("/_emulator/dashboard/connections/{id}/status", post(dashboard_set_status))
        .route("/_emulator/connections/{id}/status", post(set_status))
        .route("/_emulator/connections/{id}/company", post(rename_company))
        .route("/_emulator/connections/{id}/people", post(people))
        .route("/_emulator/connections/{id}/employees", post(employees))
        .route("/_emulator/connections/{id}/truth", get(truth))
        .route("/_emulator/connections/{id}/data_sync", post(data_sync))
        .route("/_emulator/connections/{id}/payroll", post(payroll).get(payroll_summary))
        .route("/_emulator/data_sync", post(new_connections_data_sync))
        .route("/_emulator/faults", post(add_fault).delete(clear_faults))
        .route("/_emulator/clock", post(clock))
        .route("/_emulator/token_response", post(token_response))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/violations", get(violations))
        .route("/_emulator/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/_emulator/rate_limits", post(set_limits).delete(clear_limits).get(limit_stats))
        .route("/_emulator/webhooks", post(set_webhook))
        .route("/_emulator/webhooks/send", post(send_webhook))
        .route("/_emulator/webhooks/sign", post(sign_webhook))
}

async fn connections(State(s): State<Shared>) -> Response {
    let w = s.world();
    let mut all: Vec<_> = w.connections.values().cloned().collect();
    all.sort_by_key(|c| c.created_at);
    Json(all).into_response()
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    entity_id: Option<String>,
}

#[derive(Deserialize)]
struct CompanyBody {
    name: String,
}

/// Renames the company behind a connection (for every connection to it) and delivers
/// `company.updated` for this one.
async fn rename_company(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<CompanyBody>) -> Response {
    {
        let mut w = s.world();
        let Some(company_id) = w.connections.get(&id).map(|c| c.company_id.clone()) else {
            return crate::not_found();
        };
        for c in w.connections.values_mut().filter(|c| c.company_id == company_id) {
            c.company_name = b.name.clone();
        }
        for co in w.companies.values_mut().filter(|co| co.id == company_id) {
            co.name = b.name.clone();
        }
    }
    let delivered = match webhooks::company_updated(&s, &id) {
        Some(payload) => webhooks::deliver(&s, &payload, None, None).await,
        None => (0, None),
    };
    Json(json!({"webhook_status": delivered.0, "webhook": delivered.1})).into_response()
}

#[derive(Deserialize)]
struct PeopleBody {
    #[serde(flatten)]
    change: crate::data::PeopleChange,
    #[serde(default)]
    entity_id: Option<String>,
}

/// Hires, changes, terminates or removes someone (`{"action": "hire" | "change" | "terminate" |
/// "remove", …}`) and delivers the data-change webhooks Finch would send.
async fn people(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<PeopleBody>) -> Response {
    crate::data::change_people(&s, &id, b.entity_id.as_deref(), b.change).await
}

#[derive(Deserialize)]
struct EmployeesBody {
    size: u32,
    #[serde(default)]
    entity_id: Option<String>,
    #[serde(default)]
    population: Option<PopulationBody>,
    /// `"biweekly"`: everyone in one biweekly pay group (see `Roster::biweekly_only`).
    #[serde(default)]
    payroll: Option<String>,
}

#[derive(Deserialize)]
struct PopulationBody {
    name: String,
    #[serde(default)]
    offset: u32,
}

/// Makes an entity's workforce `size` people anew (its first entity unless named).
async fn employees(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<EmployeesBody>) -> Response {
    let mut w = s.world();
    let Some(c) = w.connections.get(&id).cloned() else { return crate::not_found() };
    let entity = b.entity_id.unwrap_or_else(|| c.account_id());
    if !c.entities.iter().any(|e| e.id == entity) {
        return crate::not_found();
    }
    let seed = crate::people::seed_of(&entity);
    let mut roster = match &b.population {
        Some(p) => crate::people::Roster::drawn(
            seed,
            b.size,
            crate::people::Population {
                seed: crate::people::seed_of(&format!("population|{}", p.name)),
                offset: p.offset,
            },
        ),
        None => crate::people::Roster::new(seed, b.size),
    };
    roster.biweekly_only = b.payroll.as_deref() == Some("biweekly");
    w.rosters.insert(entity.clone(), roster);
    w.touch(&entity);
    Json(json!({"entity_id": entity, "size": b.size})).into_response()
}

/// Who each person of an entity is across rosters: `{individual_id: person}`.
async fn truth(
    State(s): State<Shared>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<EntityQuery>,
) -> Response {
    let Some(entity) = entity_of(&s, &id, q.entity_id) else { return crate::not_found() };
    let mut w = s.world();
    let r = w.roster(&entity);
    let people: serde_json::Map<String, Value> =
        r.numbers().filter_map(|n| Some((r.person(n)?.id, Value::from(r.truth(n)?)))).collect();
    Json(json!({"entity_id": entity, "people": people})).into_response()
}

#[derive(Deserialize)]
struct DataSyncBody {
    /// `data_sync_in_progress`, `pending` or `accountant_setup_pending`; `null` ends the phase.
    finch_code: Option<String>,
    /// How long the phase lasts (until ended when absent).
    #[serde(default)]
    seconds: Option<i64>,
}

/// Puts a connection's data in a 202 phase, or ends it and delivers
/// `job.initial_data_sync_org.succeeded`.
async fn data_sync(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<DataSyncBody>) -> Response {
    {
        let mut w = s.world();
        if !w.connections.contains_key(&id) {
            return crate::not_found();
        }
        match &b.finch_code {
            Some(code) => {
                let until = b.seconds.map(|secs| w.now() + time::Duration::seconds(secs));
                w.data_phases.insert(id.clone(), (code.clone(), until));
            }
            None => {
                w.data_phases.remove(&id);
            }
        }
    }
    let delivered = match (&b.finch_code, webhooks::initial_org_sync_succeeded(&s, &id)) {
        (None, Some(payload)) => webhooks::deliver(&s, &payload, None, None).await.0,
        _ => 0,
    };
    Json(json!({"finch_code": b.finch_code, "webhook_status": delivered})).into_response()
}

#[derive(Deserialize)]
struct PayrollBody {
    #[serde(default)]
    pending_latest: usize,
    #[serde(default)]
    pending_payment_ids: Vec<String>,
    #[serde(default)]
    seconds: Option<i64>,
    #[serde(default)]
    entity_id: Option<String>,
}

/// The entity a control request names, of connection `id` (its first unless named).
fn entity_of(s: &Shared, id: &str, named: Option<String>) -> Option<String> {
    let w = s.world();
    let c = w.connections.get(id)?;
    let entity = named.unwrap_or_else(|| c.account_id());
    c.entities.iter().any(|e| e.id == entity).then_some(entity)
}

/// Payments whose statements are still being fetched (202 inside the 200), or the end of it
/// (and `job.initial_data_sync_payroll.succeeded`).
async fn payroll(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<PayrollBody>) -> Response {
    let Some(entity) = entity_of(&s, &id, b.entity_id) else { return crate::not_found() };
    let ending = b.pending_latest == 0 && b.pending_payment_ids.is_empty();
    {
        let mut w = s.world();
        if ending {
            w.pay_pending.remove(&entity);
        } else {
            let until = b.seconds.map(|secs| w.now() + time::Duration::seconds(secs));
            let pending = crate::payroll::Pending {
                latest: b.pending_latest,
                ids: b.pending_payment_ids.into_iter().collect(),
                until,
            };
            w.pay_pending.insert(entity.clone(), pending);
        }
    }
    let delivered = match ending.then(|| webhooks::initial_payroll_sync_succeeded(&s, &id)).flatten() {
        Some(payload) => webhooks::deliver(&s, &payload, None, None).await.0,
        None => 0,
    };
    Json(json!({"entity_id": entity, "pending": !ending, "webhook_status": delivered})).into_response()
}

#[derive(Deserialize)]
struct EntityQuery {
    #[serde(default)]
    entity_id: Option<String>,
}

/// What an entity's payroll holds now.
async fn payroll_summary(
    State(s): State<Shared>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<EntityQuery>,
) -> Response {
    let Some(entity) = entity_of(&s, &id, q.entity_id) else { return crate::not_found() };
    let p = s.world().payroll(&entity);
    let statements: usize = p.payments.iter().map(|x| p.statement_count(x)).sum();
    let ids: Vec<&str> = p.payments.iter().map(|x| x.id.as_str()).collect();
    Json(json!({
        "entity_id": entity,
        "payments": p.payments.len(),
        "statements": statements,
        "largest_payment": p.payments.iter().map(|x| p.statement_count(x)).max().unwrap_or(0),
        "first_pay_date": p.payments.first().map(|x| x.pay_date.to_string()),
        "last_pay_date": p.payments.last().map(|x| x.pay_date.to_string()),
        "payment_ids": ids,
    }))
    .into_response()
}

/// Sets the 202 phase new connections start in (see `World::new_connection_phase`).
async fn new_connections_data_sync(State(s): State<Shared>, Json(b): Json<DataSyncBody>) -> Response {
    s.world().new_connection_phase = b.finch_code.clone().map(|code| (code, b.seconds));
    Json(json!({"finch_code": b.finch_code, "seconds": b.seconds})).into_response()
}

/// Flips a connection's status and, when a webhook target is set, delivers `account.updated`
/// before answering (the answer says how the delivery went).
async fn set_status(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<StatusBody>) -> Response {
    match flip(&s, &id, &b.status, b.entity_id.as_deref()).await {
        Some((conn, delivered)) => {
            Json(json!({"connection": conn, "webhook_status": delivered.0, "webhook": delivered.1})).into_response()
        }
        None => crate::not_found(),
    }
}

/// The dashboard's buttons: the same flip, then back to the dashboard.
async fn dashboard_set_status(
    State(s): State<Shared>,
    Path(id): Path<String>,
    axum::Form(b): axum::Form<StatusBody>,
) -> Response {
    match flip(&s, &id, &b.status, b.entity_id.as_deref()).await {
        Some(_) => axum::response::Redirect::to("/_emulator/").into_response(),
        None => crate::not_found(),
    }
}

/// Sets a connection's status (every entity's with it), or one entity's, and delivers
/// `account.updated` when a webhook target is set; `None` for an unknown connection or entity.
async fn flip(
    s: &Shared,
    id: &str,
    status: &str,
    entity: Option<&str>,
) -> Option<(crate::world::Connection, (u16, Option<webhooks::Signed>))> {
    let conn = {
        let mut w = s.world();
        let c = w.connections.get_mut(id)?;
        match entity {
            Some(e) => c.entities.iter_mut().find(|x| x.id == e)?.status = status.to_owned(),
            None => {
                c.status = status.to_owned();
                for e in c.entities.iter_mut().filter(|e| e.status != "disconnected") {
                    e.status = status.to_owned();
                }
            }
        }
        c.clone()
    };
    let delivered = match webhooks::account_updated(s, id, status, entity) {
        Some(payload) => webhooks::deliver(s, &payload, None, None).await,
        None => (0, None),
    };
    Some((conn, delivered))
}

async fn set_limits(State(s): State<Shared>, Json(l): Json<crate::world::RateLimits>) -> Response {
    let mut w = s.world();
    w.rate_limits = Some(l.clone());
    w.rate_state = crate::world::RateState::default();
    Json(l).into_response()
}

async fn clear_limits(State(s): State<Shared>) -> Response {
    s.world().rate_limits = None;
    Json(json!({"cleared": true})).into_response()
}

async fn limit_stats(State(s): State<Shared>) -> Response {
    let w = s.world();
    Json(json!({"limits": w.rate_limits, "rejected": w.rate_state.rejected})).into_response()
}

async fn set_webhook(State(s): State<Shared>, Json(t): Json<webhooks::Target>) -> Response {
    s.world().webhook = Some(t);
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
struct SendBody {
    payload: Value,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
}

async fn send_webhook(State(s): State<Shared>, Json(b): Json<SendBody>) -> Response {
    let (status, signed) = webhooks::deliver(&s, &b.payload, b.event_id, b.timestamp).await;
    Json(json!({"webhook_status": status, "webhook": signed})).into_response()
}

#[derive(Deserialize)]
struct SignBody {
    body: String,
    secret: String,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
}

async fn sign_webhook(State(s): State<Shared>, Json(b): Json<SignBody>) -> Response {
    let event_id = b.event_id.unwrap_or_else(webhooks::new_event_id);
    let timestamp = b.timestamp.unwrap_or_else(|| s.world().now().unix_timestamp());
    match webhooks::sign(&b.secret, &event_id, timestamp, &b.body) {
        Ok(signature) => Json(
            json!({"finch-event-id": event_id, "finch-timestamp": timestamp.to_string(), "finch-signature": signature}),
        )
        .into_response(),
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn add_fault(State(s): State<Shared>, Json(f): Json<Fault>) -> Response {
    s.world().faults.push(f.clone());
    Json(f).into_response()
}

async fn clear_faults(State(s): State<Shared>) -> Response {
    s.world().faults.clear();
    Json(json!({"cleared": true})).into_response()
}

#[derive(Deserialize)]
struct Clock {
    advance_seconds: i64,
}

async fn clock(State(s): State<Shared>, Json(c): Json<Clock>) -> Response {
    let mut w = s.world();
    w.clock_offset_secs += c.advance_seconds;
    Json(json!({"offset_seconds": w.clock_offset_secs})).into_response()
}

async fn requests(State(s): State<Shared>) -> Response {
    Json(s.world().requests.clone()).into_response()
}

async fn violations(State(s): State<Shared>) -> Response {
    Json(s.world().violations.clone()).into_response()
}

#[derive(serde::Deserialize)]
struct TokenShape {
    /// Leave `connection_id` out of `/auth/token` answers, as seed 003's example does.
    without_connection_id: bool,
}

/// `POST /_emulator/token_response {"without_connection_id": true}`.
async fn token_response(State(s): State<Shared>, Json(t): Json<TokenShape>) -> Response {
    s.world().token_without_connection_id = t.without_connection_id;
    Json(json!({"without_connection_id": t.without_connection_id})).into_response()
}
