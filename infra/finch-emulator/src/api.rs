//! Finch's API routes, as `docs/finch-contract.md` and `openapi.json` describe them.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::world::{CODE_LIFETIME_SECS, DEFAULT_SESSION_MINUTES, Session};

/// A Finch error body with the given status.
pub fn finch_error(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response()
}

fn invalid_client() -> Response {
    finch_error(
        401,
        json!({"code": 401, "finch_code": "invalid_client", "message": "Invalid client: Unable to validate credentials"}),
    )
}

fn bad_request(message: &str) -> Response {
    finch_error(400, json!({"code": 400, "name": "bad_request", "finch_code": "invalid_request", "message": message}))
}

fn invalid_token() -> Response {
    finch_error(
        401,
        json!({"code": 401, "name": "invalid_token_error", "message": "The access token is invalid or has been revoked"}),
    )
}

pub fn reauth_required() -> Response {
    finch_error(
        401,
        json!({"code": 401, "name": "authentication_error", "finch_code": "reauthenticate_user", "message": "The employer must re-authenticate this connection"}),
    )
}

/// Checks `Authorization: Basic base64(client_id:client_secret)`.
fn basic_ok(s: &Shared, headers: &HeaderMap) -> bool {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else { return false };
    let Some(b64) = v.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = STANDARD.decode(b64.trim()) else { return false };
    let expected = format!("{}:{}", s.config().client_id, s.config().client_secret);
    decoded == expected.as_bytes()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

fn body_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("Invalid request body: {e}")))
}

#[derive(Deserialize)]
struct NewSession {
    customer_id: String,
    customer_name: String,
    products: Vec<String>,
    #[serde(default)]
    customer_email: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    minutes_to_expire: Option<f64>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    manual: Option<bool>,
    #[serde(default)]
    integration: Option<IntegrationBody>,
}

#[derive(Deserialize)]
struct IntegrationBody {
    provider: String,
    #[serde(default)]
    auth_method: Option<String>,
}

/// `POST /connect/sessions`.
pub async fn create_session(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !basic_ok(&s, &headers) {
        return invalid_client();
    }
    let req: NewSession = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut w = s.world();
    if let Some(c) = w.live_connection_of(&req.customer_id) {
        return finch_error(
            400,
            json!({
                "code": 400, "finch_code": "connection_already_exists", "name": "bad_request",
                "message": format!("There's an existing connection for the customer_id: {}. Please use the /connect/sessions/reauthenticate endpoint instead.", req.customer_id),
                "context": {"customer_id": req.customer_id, "connection_id": c.id},
            }),
        );
    }
    let minutes = req.minutes_to_expire.map_or(DEFAULT_SESSION_MINUTES, |m| m as i64);
    let id = w.staged_session_of(&req.customer_id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let session = Session {
        id: id.clone(),
        customer_id: Some(req.customer_id),
        customer_name: Some(req.customer_name),
        customer_email: req.customer_email,
        products: req.products,
        redirect_uri: req.redirect_uri,
        sandbox: req.sandbox,
        manual: req.manual.unwrap_or(false),
        provider: req.integration.as_ref().map(|i| i.provider.clone()),
        auth_method: req.integration.and_then(|i| i.auth_method),
        reauth_connection: None,
        expires_at: w.now() + time::Duration::minutes(minutes),
        completed: false,
    };
    w.sessions.insert(id.clone(), session);
    (StatusCode::CREATED, Json(json!({"session_id": id, "connect_url": s.connect_url(&id)}))).into_response()
}

#[derive(Deserialize)]
struct Reauth {
    connection_id: String,
    #[serde(default)]
    minutes_to_expire: Option<i64>,
    #[serde(default)]
    products: Option<Vec<String>>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// `POST /connect/sessions/reauthenticate`.
pub async fn reauthenticate(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !basic_ok(&s, &headers) {
        return invalid_client();
    }
    let req: Reauth = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut w = s.world();
    let Some(conn) = w.connections.get(&req.connection_id).filter(|c| !c.disconnected).cloned() else {
        return finch_error(
            400,
            json!({"code": 400, "finch_code": "connection_not_found", "message": "Connection not found", "name": "bad_request"}),
        );
    };
    let id = uuid::Uuid::new_v4().to_string();
    let session = Session {
        id: id.clone(),
        customer_id: conn.customer_id.clone(),
        customer_name: conn.customer_name.clone(),
        customer_email: conn.customer_email.clone(),
        products: req.products.unwrap_or(conn.products.clone()),
        redirect_uri: req.redirect_uri,
        sandbox: (conn.client_type == "sandbox").then(|| "finch".to_owned()),
        manual: conn.manual,
        provider: Some(conn.provider_id.clone()),
        auth_method: Some(conn.auth_type.clone()),
        reauth_connection: Some(conn.id.clone()),
        expires_at: w.now() + time::Duration::minutes(req.minutes_to_expire.unwrap_or(43_200)),
        completed: false,
    };
    w.sessions.insert(id.clone(), session);
    (StatusCode::CREATED, Json(json!({"session_id": id, "connect_url": s.connect_url(&id)}))).into_response()
}

#[derive(Deserialize)]
struct TokenReq {
    code: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

fn invalid_grant(message: &str) -> Response {
    finch_error(400, json!({"code": 400, "name": "invalid_grant_error", "message": message}))
}

/// `POST /auth/token`: credentials in the body; any `Authorization` header is ignored.
pub async fn token(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let req: TokenReq = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.client_id.as_deref() != Some(s.config().client_id.as_str())
        || req.client_secret.as_deref() != Some(s.config().client_secret.as_str())
    {
        return finch_error(
            401,
            json!({"code": 401, "name": "invalid_client_error", "message": "Invalid client credentials"}),
        );
    }
    let mut w = s.world();
    let now = w.now();
    let Some(code) = w.codes.get(&req.code).cloned() else {
        return invalid_grant("The authorization code is invalid");
    };
    if code.used {
        return invalid_grant("The authorization code has already been used");
    }
    if (now - code.issued_at).whole_seconds() > CODE_LIFETIME_SECS {
        return invalid_grant("The authorization code has expired");
    }
    if code.redirect_uri != req.redirect_uri {
        return invalid_grant("redirect_uri does not match the one used for Connect");
    }
    if let Some(c) = w.codes.get_mut(&req.code) {
        c.used = true;
    }
    let Some(conn) = w.connections.get(&code.connection_id).filter(|c| !c.disconnected).cloned() else {
        return invalid_grant("The connection of this code no longer exists");
    };
    let access_token = w.mint_token(&conn.id);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "bearer",
        "connection_id": conn.id,
        "customer_id": conn.customer_id,
        "customer_name": conn.customer_name,
        "account_id": conn.account_id(),
        "client_type": conn.client_type,
        "company_id": conn.company_id,
        "connection_type": conn.connection_type,
        "products": conn.products,
        "provider_id": conn.provider_id,
        "entity_ids": conn.live_entity_ids(),
    });
    if w.token_without_connection_id
        && let Some(o) = body.as_object_mut()
    {
        o.remove("connection_id");
    }
    Json(body).into_response()
}

/// Resolves a bearer token to its live connection, or the 401 Finch would answer.
pub fn connection_for(s: &Shared, headers: &HeaderMap) -> Result<(String, crate::world::Connection), Response> {
    let token = bearer(headers).ok_or_else(|| {
        finch_error(401, json!({"statusCode": 401, "status": 401, "code": 401, "message": "Unauthorized request: no authentication given", "name": "unauthorized_request_error"}))
    })?;
    let w = s.world();
    let t = w.tokens.get(&token).filter(|t| !t.revoked).ok_or_else(invalid_token)?;
    let c = w.connections.get(&t.connection_id).filter(|c| !c.disconnected).ok_or_else(invalid_token)?;
    Ok((t.id.clone(), c.clone()))
}

/// `GET /introspect`: works even in `reauth` (that is how apps learn of it).
pub async fn introspect(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let (token_id, c) = match connection_for(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The data's snapshot time: it moves only when the data changed (a sync found something).
    let last_sync = (c.status == "connected")
        .then(|| s.world().last_sync(&c))
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    Json(json!({
        "id": token_id,
        "connection_id": c.id,
        "connection_status": {"status": c.status, "message": format!("Connection is {}", c.status), "last_successful_sync": last_sync},
        "client_id": s.config().client_id,
        "client_type": c.client_type,
        "connection_type": c.connection_type,
        "company_id": c.company_id,
        "account_id": c.account_id(),
        "customer_id": c.customer_id,
        "customer_name": c.customer_name,
        "customer_email": c.customer_email,
        "authentication_methods": [{"type": c.auth_type, "connection_status": {"status": c.status}, "products": c.products}],
        "products": c.products,
        "username": "good_user",
        "provider_id": c.provider_id,
        "payroll_provider_id": c.provider_id,
        "manual": c.manual,
        "entities": c.entities.iter().map(|e| json!({"id": e.id, "name": e.name, "source_id": e.source_id, "status": e.status})).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /disconnect`: revokes every token of the connection, for good.
pub async fn disconnect(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let (_, c) = match connection_for(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut w = s.world();
    for t in w.tokens.values_mut().filter(|t| t.connection_id == c.id) {
        t.revoked = true;
    }
    if let Some(conn) = w.connections.get_mut(&c.id) {
        conn.disconnected = true;
    }
    Json(json!({"status": "success"})).into_response()
}

#[derive(Deserialize)]
struct DisconnectEntities {
    entity_ids: Vec<String>,
}

/// `POST /disconnect-entity`: disconnects entities of a multi-entity connection; the
/// connection and its tokens stay. Finch answers 400 with one `NOT_FOUND` per unknown entity
/// and sends `account.updated` (`disconnected`) for each entity it disconnected.
pub async fn disconnect_entity(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (_, c) = match connection_for(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req: DisconnectEntities = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.entity_ids.is_empty() {
        return finch_error(
            400,
            json!({"statusCode": 400, "status": 400, "code": 400, "name": "BadRequestError", "message": "entity_ids must contain at least 1 element"}),
        );
    }
    let unknown: Vec<Value> = req
        .entity_ids
        .iter()
        .filter(|id| !c.entities.iter().any(|e| &e.id == *id))
        .map(|id| json!({"entityId": id, "error": "NOT_FOUND"}))
        .collect();
    if !unknown.is_empty() {
        return finch_error(400, json!({"errors": unknown}));
    }
    {
        let mut w = s.world();
        if let Some(conn) = w.connections.get_mut(&c.id) {
            for e in conn.entities.iter_mut().filter(|e| req.entity_ids.contains(&e.id)) {
                e.status = "disconnected".into();
            }
        }
    }
    for entity in req.entity_ids {
        if let Some(payload) = crate::webhooks::account_updated(&s, &c.id, "disconnected", Some(&entity)) {
            let s = s.clone();
            tokio::spawn(async move {
                crate::webhooks::deliver(&s, &payload, None, None).await;
            });
        }
    }
    Json(json!({"status": "success"})).into_response()
}

#[derive(Deserialize)]
struct SandboxNew {
    provider_id: String,
    #[serde(default)]
    authentication_type: Option<String>,
    #[serde(default)]
    products: Option<Vec<String>>,
    #[serde(default)]
    employee_size: Option<u32>,
}

/// `POST /sandbox/connections`: a connection without Connect.
pub async fn sandbox_create(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !basic_ok(&s, &headers) {
        return invalid_client();
    }
    let req: SandboxNew = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let auth = req.authentication_type.unwrap_or_else(|| "credential".into());
    let products = req
        .products
        .unwrap_or_else(|| vec!["company".into(), "directory".into(), "individual".into(), "employment".into()]);
    let mut w = s.world();
    let id = w.create_connection(
        None,
        None,
        None,
        req.provider_id.clone(),
        products.clone(),
        auth.clone(),
        Some("finch"),
        false,
    );
    let token = w.mint_token(&id);
    let c = w.connections[&id].clone();
    if let Some(size) = req.employee_size {
        // A sandbox connection is its own employer (`employee_size`, Finch's default 20).
        w.rosters.insert(c.account_id(), crate::people::Roster::new(crate::people::seed_of(&c.account_id()), size));
    }
    Json(json!({
        "connection_id": c.id, "entity_id": c.account_id(), "company_id": c.company_id, "account_id": c.account_id(),
        "provider_id": c.provider_id, "authentication_type": auth, "products": products,
        "access_token": token, "token_type": "bearer",
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SandboxStatus {
    #[serde(default)]
    connection_status: Option<String>,
}

/// `PUT /sandbox/connections/accounts`: Finch's documented way to simulate `reauth`.
pub async fn sandbox_set_status(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (_, c) = match connection_for(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req: SandboxStatus = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(st) = req.connection_status {
        if let Some(conn) = s.world().connections.get_mut(&c.id) {
            conn.status = st.clone();
        }
        // Finch notifies asynchronously; so does the emulator.
        if let Some(payload) = crate::webhooks::account_updated(&s, &c.id, &st, None) {
            let s = s.clone();
            tokio::spawn(async move {
                crate::webhooks::deliver(&s, &payload, None, None).await;
            });
        }
    }
    Json(json!({
        "connection_id": c.id, "entity_id": c.account_id(), "account_id": c.account_id(), "authentication_type": c.auth_type,
        "company_id": c.company_id, "provider_id": c.provider_id, "products": c.products,
    }))
    .into_response()
}
