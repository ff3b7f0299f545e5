//! Finch's organization data endpoints over the synthetic workforces of [`crate::people`]:
//! `/employer/company`, `/employer/directory`, `/employer/individual`, `/employer/employment`.
//!
//! What Finch documents (`../shared/finch/DATA.md` §1), enforced: at most one `entity_ids` value
//! per request, naming an entity of the connection; directory `limit` ≤ 10,000
//! (else 422 `page_size_limit_exceeded`) with `paging.count`; batches ≤ 10,000 ids (else 422
//! `batch_limit_exceeded`), each item answered on its own (an unknown id is a 404 item inside
//! a 200); a product the connection was not granted is a 403 `insufficient_scope_error`; a
//! connection in `reauth` a 401; a connection whose data is not there yet a 202 with the reason
//! (`pending` for assisted connections, or whatever phase the control API set); the SSN only
//! when the `ssn` product is granted and `options.include` asks for it.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{connection_for, finch_error};
use crate::people::Roster;
use crate::world::Connection;

/// Finch's caps (DATA.md §0).
pub const MAX_DIRECTORY_LIMIT: u64 = 10_000;
pub const DEFAULT_DIRECTORY_LIMIT: u64 = 100;
pub const MAX_BATCH: usize = 10_000;

/// `entity_ids`, `limit` and `offset` from a query string (`entity_ids[]=` as Finch's Node SDK
/// sends it, or `entity_ids=`).
struct Query {
    entity_ids: Vec<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

fn query(raw: Option<&str>) -> Result<Query, Response> {
    let mut q = Query { entity_ids: Vec::new(), limit: None, offset: None };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || {
            v.parse::<u64>().map_err(|_| {
                finch_error(
                    400,
                    json!({"code": 400, "name": "bad_request", "finch_code": "invalid_request", "message": format!("{k} must be a non-negative integer")}),
                )
            })
        };
        match k.as_ref() {
            "entity_ids" | "entity_ids[]" => q.entity_ids.push(v.into_owned()),
            "limit" => q.limit = Some(number()?),
            "offset" => q.offset = Some(number()?),
            _ => {}
        }
    }
    Ok(q)
}

fn accepted(finch_code: &str) -> Response {
    let (name, message) = match finch_code {
        "data_sync_in_progress" => {
            ("sync_in_progress", "The data being requested is being fetched. Please check back later.")
        }
        "accountant_setup_pending" => (
            "authorization_pending",
            "Finch is still setting up the accountant user for this connection. Please try again later.",
        ),
        _ => ("authorization_pending", "Authorization to this company's data is pending"),
    };
    let code = if ["data_sync_in_progress", "accountant_setup_pending"].contains(&finch_code) {
        finch_code
    } else {
        "pending"
    };
    (StatusCode::ACCEPTED, Json(json!({"code": 202, "name": name, "finch_code": code, "message": message})))
        .into_response()
}

/// Finch's data answer with `Finch-Data-Retrieved` (DATA.md §1.1).
pub fn fetched(s: &Shared, c: &Connection, entity: &str, body: Value) -> Response {
    let at = s.world().data_retrieved(c, entity);
    let mut r = Json(body).into_response();
    if let Ok(v) = at.format(&time::format_description::well_known::Rfc3339)
        && let Ok(v) = axum::http::HeaderValue::from_str(&v)
    {
        r.headers_mut().insert("finch-data-retrieved", v);
    }
    r
}

fn invalid(message: &str) -> Response {
    finch_error(400, json!({"code": 400, "name": "bad_request", "finch_code": "invalid_request", "message": message}))
}

/// The checks every data request passes, in Finch's order: the token, the connection's state,
/// the product, the entity, the data's availability. Returns the connection and the entity.
pub fn access(
    s: &Shared,
    headers: &HeaderMap,
    product: &str,
    entity_ids: &[String],
) -> Result<(Connection, String), Response> {
    let (_, c) = connection_for(s, headers)?;
    if c.status == "reauth" {
        return Err(crate::api::reauth_required());
    }
    if !c.products.iter().any(|p| p == product) {
        return Err(finch_error(
            403,
            json!({"statusCode": 403, "status": 403, "code": 403, "name": "insufficient_scope_error", "message": format!("This connection was not granted the {product} product")}),
        ));
    }
    let live = c.live_entity_ids();
    let entity = match entity_ids {
        // Finch does not say what it does without `entity_ids` on a connection of several
        // entities (DATA.md §8); the emulator answers for the first, as `account_id` names it.
        [] => match live.first() {
            Some(first) => first.clone(),
            None => return Err(invalid("this connection has no entity left")),
        },
        [one] if live.contains(one) => one.clone(),
        [_] => return Err(invalid("entity_ids names no entity of this connection")),
        _ => return Err(invalid("Provide exactly one entity ID per request; a maximum of one is accepted.")),
    };
    if matches!(c.status.as_str(), "pending" | "processing") {
        return Err(accepted("pending"));
    }
    let phase = s.world().data_phase(&c.id);
    if let Some(code) = phase {
        return Err(accepted(&code));
    }
    Ok((c, entity))
}

/// The roster of `entity` (made with the default size the first time it is read).
fn with_roster<T>(s: &Shared, entity: &str, f: impl FnOnce(&Roster) -> T) -> T {
    let mut w = s.world();
    f(w.roster(entity))
}

/// `GET /employer/company`.
pub async fn company(State(s): State<Shared>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (c, entity) = match access(&s, &headers, "company", &q.entity_ids) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let departments: Vec<Value> = with_roster(&s, &entity, |r| {
        let mut names: Vec<String> = r
            .numbers()
            .take(2_000)
            .filter_map(|n| r.employment(n, ""))
            .filter_map(|e| e["department"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| json!({"name": n, "parent": {"name": null}})).collect()
    });
    let body = json!({
        "id": c.company_id,
        "legal_name": c.company_name,
        "entity": {"type": "corporation", "subtype": "c_corporation"},
        "ein": "12-3456789",
        "primary_email": "founders@example.com",
        "primary_phone_number": "+15555550100",
        "departments": departments,
        "locations": [{"line1": "1 Main St", "line2": null, "city": "Springfield", "state": "IL", "postal_code": "62701", "country": "US", "name": "HQ", "source_id": null}],
        "accounts": [],
    });
    fetched(&s, &c, &entity, body)
}

/// `GET /employer/directory`: offset paging over the roster, `paging.count` the total.
pub async fn directory(State(s): State<Shared>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (c, entity) = match access(&s, &headers, "directory", &q.entity_ids) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(DEFAULT_DIRECTORY_LIMIT);
    if limit > MAX_DIRECTORY_LIMIT {
        return finch_error(
            422,
            json!({"code": 422, "name": "unprocessable_entity_error", "finch_code": "page_size_limit_exceeded", "message": "Page size exceeds the maximum of 10000 items. Please reduce the limit parameter."}),
        );
    }
    let offset = q.offset.unwrap_or(0);
    let (count, individuals) = with_roster(&s, &entity, |r| {
        let page: Vec<Value> =
            r.numbers().skip(offset as usize).take(limit as usize).filter_map(|n| r.directory(n)).collect();
        (r.len(), page)
    });
    fetched(&s, &c, &entity, json!({"paging": {"count": count, "offset": offset}, "individuals": individuals}))
}

#[derive(Deserialize)]
struct BatchItem {
    individual_id: String,
}

#[derive(Deserialize)]
struct Options {
    #[serde(default)]
    include: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Batch {
    requests: Vec<BatchItem>,
    #[serde(default)]
    options: Option<Options>,
}

fn batch_limit_exceeded() -> Response {
    finch_error(
        422,
        json!({"code": 422, "name": "unprocessable_entity_error", "finch_code": "batch_limit_exceeded", "message": "Batch size exceeds the maximum of 10000 items. Please reduce the number of items in your request."}),
    )
}

fn not_found_item(id: &str) -> Value {
    json!({"individual_id": id, "code": 404, "body": {"code": 404, "finch_code": "individual_not_found", "message": format!("No individual with id {id} found"), "name": "not_found_error"}})
}

/// `POST /employer/individual` and `POST /employer/employment`: each id answered on its own.
async fn batch(s: Shared, headers: HeaderMap, raw: Option<String>, body: &[u8], product: &'static str) -> Response {
    let q = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (c, entity) = match access(&s, &headers, product, &q.entity_ids) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req: Batch = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    if req.requests.len() > MAX_BATCH {
        return batch_limit_exceeded();
    }
    let with_ssn = product == "individual"
        && c.products.iter().any(|p| p == "ssn")
        && req.options.and_then(|o| o.include).is_some_and(|i| i.iter().any(|x| x == "ssn"));
    let source_id = c.entities.iter().find(|e| e.id == entity).map(|e| e.source_id.clone()).unwrap_or_default();
    let responses: Vec<Value> = with_roster(&s, &entity, |r| {
        req.requests
            .iter()
            .map(|item| {
                let n = r.find(&item.individual_id);
                let body = n.and_then(|n| {
                    if product == "individual" { r.individual(n, with_ssn) } else { r.employment(n, &source_id) }
                });
                match body {
                    Some(body) => json!({"individual_id": item.individual_id, "code": 200, "body": body}),
                    None => not_found_item(&item.individual_id),
                }
            })
            .collect()
    });
    fetched(&s, &c, &entity, json!({"responses": responses}))
}

pub async fn individual(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    batch(s, headers, raw, &body, "individual").await
}

pub async fn employment(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    batch(s, headers, raw, &body, "employment").await
}

// --- changing the data: Finch's sandbox endpoints and the emulator's control API -----------

/// The fields of Finch's individual model (the rest of a sandbox body is employment's).
const INDIVIDUAL_FIELDS: &[&str] = &[
    "first_name",
    "middle_name",
    "last_name",
    "preferred_name",
    "emails",
    "phone_numbers",
    "gender",
    "ethnicity",
    "marital_status",
    "dob",
    "ssn",
    "encrypted_ssn",
    "residence",
];
/// Fields both models carry.
const NAME_FIELDS: &[&str] = &["first_name", "middle_name", "last_name"];

/// Splits a body of individual and employment fields into the two patches.
fn split(body: &serde_json::Map<String, Value>) -> crate::people::Patch {
    let mut patch = crate::people::Patch::default();
    for (k, v) in body {
        if k == "id" {
            continue;
        }
        if INDIVIDUAL_FIELDS.contains(&k.as_str()) {
            patch.individual.insert(k.clone(), v.clone());
        }
        if !INDIVIDUAL_FIELDS.contains(&k.as_str()) || NAME_FIELDS.contains(&k.as_str()) {
            patch.employment.insert(k.clone(), v.clone());
        }
    }
    patch
}

/// The data-change events a patch means: the directory summarises names, manager,
/// department and whether the person is active.
fn events_for(patch: &crate::people::Patch) -> Vec<&'static str> {
    let mut events = Vec::new();
    let directory = ["first_name", "middle_name", "last_name", "manager", "department", "is_active"];
    if patch.individual.keys().chain(patch.employment.keys()).any(|k| directory.contains(&k.as_str())) {
        events.push("directory.updated");
    }
    if !patch.individual.is_empty() {
        events.push("individual.updated");
    }
    if !patch.employment.is_empty() {
        events.push("employment.updated");
    }
    events
}

/// What a change did: the person's id and the events it sent (with their delivery statuses).
struct Changed {
    individual_id: String,
    events: Vec<Value>,
}

fn not_found_individual(id: &str) -> Response {
    finch_error(
        404,
        json!({"code": 404, "name": "not_found_error", "finch_code": "individual_not_found", "message": format!("No individual with id {id} found")}),
    )
}

/// The connection a sandbox request's token names, and its first live entity.
fn sandbox_target(s: &Shared, headers: &HeaderMap) -> Result<(Connection, String), Response> {
    let (_, c) = connection_for(s, headers)?;
    let entity = c.live_entity_ids().into_iter().next().ok_or_else(|| invalid("this connection has no entity left"))?;
    Ok((c, entity))
}

/// Applies `patch` to `individual_id` of `entity` and builds the events to send.
fn apply_change(
    s: &Shared,
    c: &Connection,
    entity: &str,
    individual_id: &str,
    patch: crate::people::Patch,
) -> Option<Changed> {
    let events = events_for(&patch);
    {
        let mut w = s.world();
        let r = w.roster(entity);
        let n = r.find(individual_id)?;
        r.change(n, patch);
        w.touch(entity);
    }
    let events =
        events.into_iter().filter_map(|e| crate::webhooks::data_changed(s, &c.id, entity, e, individual_id)).collect();
    Some(Changed { individual_id: individual_id.to_owned(), events })
}

/// Hires someone into `entity`, with `patch` over what is generated for them.
fn hire(s: &Shared, c: &Connection, entity: &str, patch: crate::people::Patch) -> Changed {
    let id = {
        let mut w = s.world();
        let r = w.roster(entity);
        let n = r.hire();
        r.change(n, patch);
        let id = r.person(n).map(|p| p.id).unwrap_or_default();
        w.touch(entity);
        id
    };
    let events = ["directory.created", "individual.created", "employment.created"]
        .into_iter()
        .filter_map(|e| crate::webhooks::data_changed(s, &c.id, entity, e, &id))
        .collect();
    Changed { individual_id: id, events }
}

/// Delivers the events before the change is answered (Finch sends them a little later; a test
/// then knows they have arrived without waiting).
async fn send(s: &Shared, events: Vec<Value>) {
    crate::webhooks::deliver_all(s, events).await;
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    serde_json::from_slice(body).map_err(|e| invalid(&format!("Invalid request body: {e}")))
}

/// `PUT /sandbox/company`: renames the company (and sends `company.updated`).
pub async fn sandbox_company(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (c, _) = match sandbox_target(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = match body_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(name) = body.get("legal_name").and_then(Value::as_str) {
        let mut w = s.world();
        for conn in w.connections.values_mut().filter(|x| x.company_id == c.company_id) {
            conn.company_name = name.to_owned();
        }
        for co in w.companies.values_mut().filter(|co| co.id == c.company_id) {
            co.name = name.to_owned();
        }
        for e in &c.entities {
            w.touch(&e.id);
        }
    }
    if let Some(event) = crate::webhooks::company_updated(&s, &c.id) {
        send(&s, vec![event]).await;
    }
    Json(Value::Object(body)).into_response()
}

/// `POST /sandbox/directory`: hires each person given (their fields over generated ones).
pub async fn sandbox_directory(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (c, entity) = match sandbox_target(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let people: Vec<serde_json::Map<String, Value>> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    let mut created = Vec::new();
    let mut events = Vec::new();
    for person in &people {
        let hired = hire(&s, &c, &entity, split(person));
        let individual = {
            let mut w = s.world();
            let r = w.roster(&entity);
            r.find(&hired.individual_id).and_then(|n| r.individual(n, false))
        };
        created.push(individual.unwrap_or(Value::Null));
        events.extend(hired.events);
    }
    send(&s, events).await;
    Json(created).into_response()
}

async fn sandbox_update(s: Shared, headers: HeaderMap, id: String, body: &[u8], individual: bool) -> Response {
    let (c, entity) = match sandbox_target(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let fields = match body_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut patch = split(&fields);
    if individual {
        patch.employment.retain(|k, _| NAME_FIELDS.contains(&k.as_str()));
    } else {
        patch.individual.retain(|k, _| NAME_FIELDS.contains(&k.as_str()));
    }
    let Some(changed) = apply_change(&s, &c, &entity, &id, patch) else { return not_found_individual(&id) };
    send(&s, changed.events).await;
    let source_id = c.entities.iter().find(|e| e.id == entity).map(|e| e.source_id.clone()).unwrap_or_default();
    let mut w = s.world();
    let r = w.roster(&entity);
    let n = r.find(&id);
    let out = n.and_then(|n| if individual { r.individual(n, false) } else { r.employment(n, &source_id) });
    Json(out.unwrap_or(Value::Null)).into_response()
}

/// `PUT /sandbox/individual/{individual_id}`.
pub async fn sandbox_individual(
    State(s): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sandbox_update(s, headers, id, &body, true).await
}

/// `PUT /sandbox/employment/{individual_id}`.
pub async fn sandbox_employment(
    State(s): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sandbox_update(s, headers, id, &body, false).await
}

/// The control API's change to a connection's people (`POST /_emulator/connections/{id}/people`).
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PeopleChange {
    /// Someone joins (optionally with fields of their own).
    Hire {
        #[serde(default)]
        fields: serde_json::Map<String, Value>,
    },
    /// Fields of someone change (individual and employment fields together).
    Change { individual_id: String, fields: serde_json::Map<String, Value> },
    /// Someone leaves: inactive, terminated, with an end date.
    Terminate {
        individual_id: String,
        #[serde(default)]
        end_date: Option<String>,
    },
    /// Someone disappears from the provider altogether.
    Remove { individual_id: String },
}

/// Applies a control-API change to connection `id`'s entity (its first unless named), delivers
/// the data-change webhooks before answering, and says what it did.
pub async fn change_people(s: &Shared, id: &str, entity: Option<&str>, change: PeopleChange) -> Response {
    let Some(c) = s.world().connections.get(id).cloned() else { return crate::not_found() };
    let entity = match entity {
        Some(e) if c.entities.iter().any(|x| x.id == e) => e.to_owned(),
        Some(_) => return crate::not_found(),
        None => c.account_id(),
    };
    let changed = match change {
        PeopleChange::Hire { fields } => Some(hire(s, &c, &entity, split(&fields))),
        PeopleChange::Change { individual_id, fields } => apply_change(s, &c, &entity, &individual_id, split(&fields)),
        PeopleChange::Terminate { individual_id, end_date } => {
            let end = end_date.unwrap_or_else(|| s.world().now().date().to_string());
            let mut fields = serde_json::Map::new();
            fields.insert("end_date".into(), json!(end));
            fields.insert("is_active".into(), json!(false));
            fields.insert("employment_status".into(), json!("terminated"));
            apply_change(s, &c, &entity, &individual_id, split(&fields))
        }
        PeopleChange::Remove { individual_id } => {
            let removed = {
                let mut w = s.world();
                let r = w.roster(&entity);
                let removed = r.find(&individual_id).map(|n| r.removed.insert(n)).is_some();
                w.touch(&entity);
                removed
            };
            removed.then(|| Changed {
                events: ["directory.deleted", "individual.deleted", "employment.deleted"]
                    .into_iter()
                    .filter_map(|e| crate::webhooks::data_changed(s, &c.id, &entity, e, &individual_id))
                    .collect(),
                individual_id,
            })
        }
    };
    let Some(changed) = changed else { return not_found_individual("?") };
    let types: Vec<Value> = changed.events.iter().map(|e| e["event_type"].clone()).collect();
    let statuses = crate::webhooks::deliver_all(s, changed.events).await;
    Json(json!({"individual_id": changed.individual_id, "entity_id": entity, "events": types, "webhook_statuses": statuses}))
        .into_response()
}
