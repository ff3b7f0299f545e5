//! A local Finch: the API endpoints Perch uses, the Connect page, and controls for tests.
//!
//! It speaks the contract in `docs/finch-contract.md`: Basic auth on Connect sessions
//! (with `connection_already_exists`), body credentials on `/auth/token` (10-minute single-use
//! codes, `invalid_grant_error`), Bearer on `/introspect`, the organization data endpoints
//! (`/employer/company`, `/employer/directory`, `/employer/individual`, `/employer/employment`:
//! see [`data`], over the synthetic workforces of [`people`]), their pay (`/employer/payment`,
//! `/employer/pay-statement`: see [`payroll`]) and `/disconnect` (which revokes
//! every token of the connection), sandbox connections and data, and a `Finch-Request-Id` on
//! every response.
//!
//! In strict mode (the default) every request to a Finch route is checked against Finch's
//! OpenAPI document — version header, auth scheme, body schema — and refused with Finch's 400
//! `invalid_request` if it does not conform; every response is checked too. Violations are
//! kept and served at `GET /_emulator/violations`, so a test can assert that a client (Perch)
//! and the emulator itself both stayed inside the spec.
//!
//! Controls under `/_emulator/` (no auth; bind to loopback): flip a connection's status,
//! inject faults (status, `Retry-After`, latency, a hold until the test releases it) per
//! route, answer `/auth/token` in seed 003's shape (no `connection_id`), move the clock, list
//! the requests seen and the connections held.

#![allow(clippy::result_large_err)] // axum `Response` is the natural error type of these handlers.

pub mod api;
mod control;
pub mod data;
pub mod holds;
pub mod page;
pub mod payroll;
pub mod people;
pub mod spec;
pub mod webhooks;
pub mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::world::{Seen, World};

/// Bodies larger than this are refused before anything else looks at them.
const MAX_BODY: usize = 1 << 20;
/// The emulator's own answers are read back (to referee them) up to this size: a directory page
/// or batch of 10,000 people is several megabytes.
const MAX_RESPONSE: usize = 64 << 20;

/// The application credentials the emulator accepts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Must be a UUID: Finch's spec says so for `/auth/token`.
    pub client_id: String,
    pub client_secret: String,
    /// Refuse requests that do not match Finch's OpenAPI document.
    pub strict: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            client_id: "7f4c5a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f".into(),
            client_secret: "finch-emulator-secret".into(),
            strict: true,
        }
    }
}

struct Inner {
    config: EmulatorConfig,
    base_url: String,
    world: Mutex<World>,
    holds: holds::Holds,
}

/// Shared handle to the emulator's state.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

impl Shared {
    pub fn config(&self) -> &EmulatorConfig {
        &self.0.config
    }

    /// Locks the world; a poisoned lock (a panicked handler) is recovered, not propagated.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.0.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The gates held requests wait at (see [`holds`]).
    pub fn holds(&self) -> &holds::Holds {
        &self.0.holds
    }

    /// The Connect URL of a session, on this emulator.
    pub fn connect_url(&self, session_id: &str) -> String {
        format!("{}/authorize?session={session_id}", self.0.base_url)
    }
}

/// A running emulator.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Finch-Request-Ids and routes of every request seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.world().requests.clone()
    }

    /// Spec violations seen so far (requests and responses).
    pub fn violations(&self) -> Vec<String> {
        self.shared.world().violations.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (use port 0 for a random one) and serves until the handle is dropped.
pub async fn spawn(config: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let shared = Shared(Arc::new(Inner {
        config,
        base_url: base_url.clone(),
        world: Mutex::new(World::default()),
        holds: holds::Holds::default(),
    }));
    let app = router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Running { addr, base_url, shared, shutdown: Some(tx) })
}

/// The emulator's routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/connect/sessions", post(api::create_session))
        .route("/connect/sessions/reauthenticate", post(api::reauthenticate))
        .route("/auth/token", post(api::token))
        .route("/introspect", get(api::introspect))
        .route("/employer/company", get(data::company))
        .route("/employer/directory", get(data::directory))
        .route("/employer/individual", post(data::individual))
        .route("/employer/employment", post(data::employment))
        .route("/employer/payment", get(payroll::payments))
        .route("/employer/pay-statement", post(payroll::pay_statements))
        .route("/disconnect", post(api::disconnect))
        .route("/disconnect-entity", post(api::disconnect_entity))
        .route("/sandbox/connections", post(api::sandbox_create))
        .route("/sandbox/connections/accounts", axum::routing::put(api::sandbox_set_status))
        .route("/sandbox/company", axum::routing::put(data::sandbox_company))
        .route("/sandbox/directory", post(data::sandbox_directory))
        .route("/sandbox/individual/{individual_id}", axum::routing::put(data::sandbox_individual))
        .route("/sandbox/employment/{individual_id}", axum::routing::put(data::sandbox_employment))
        .route("/sandbox/payment", post(payroll::sandbox_payment))
        .route("/authorize", get(page::show).post(page::submit))
        .merge(control::routes())
        .fallback(|| async {
            api::finch_error(404, json!({"code": 404, "name": "not_found_error", "message": "Not found"}))
        })
        .layer(middleware::from_fn_with_state(shared.clone(), referee))
        .with_state(shared)
}

fn injected(status: u16, retry_after: Option<u64>, location: Option<&str>) -> Response {
    let body = match status {
        429 => {
            json!({"statusCode": 429, "status": 429, "code": 429, "message": "Too many requests", "name": "rate_limit_exceeded_error", "finch_code": "finch_api_ip_rl"})
        }
        408 => json!({"code": 408, "name": "client_connection_closed", "message": "Request timed out"}),
        401 => {
            json!({"code": 401, "name": "authentication_error", "finch_code": "reauthenticate_user", "message": "The employer must re-authenticate"})
        }
        502 => {
            json!({"code": 502, "name": "bad_gateway_error", "finch_code": "upstream_provider_error", "message": "The provider failed to respond"})
        }
        s if s >= 500 => json!({"code": s, "name": "server_error", "message": "Internal server error"}),
        s => json!({"code": s, "name": "injected_error", "message": "Injected by the Finch emulator"}),
    };
    let mut r = api::finch_error(status, body);
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        r.headers_mut().insert("location", v);
    }
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

/// Stamps `Finch-Request-Id`, applies faults, referees against the spec, records the request.
async fn referee(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let is_control = path.starts_with("/_emulator");
    let op = if is_control { None } else { spec::spec().operation(&method, &path) };
    let seen_at = (!is_control).then(|| record_arrival(&s, &method, &path, &request_id));

    let gated = if is_control || path == "/authorize" { None } else { gate(&s, &method, &path).await };
    let fault_injected = matches!(gated, Some((_, true)));
    let mut response = match gated {
        Some((refused, _)) => refused,
        None => match inbound(&s, op.as_ref(), req).await {
            Ok(req) => next.run(req).await,
            Err(refused) => refused,
        },
    };
    if let Some(op) = &op {
        response = outbound(&s, op, response, fault_injected).await;
    }
    if response.status().is_success() {
        let cut = {
            let mut w = s.world();
            w.cut.take_if(|(at, _)| *at == path).map(|(_, after)| after)
        };
        if let Some(after) = cut {
            response = broken_off(response, after).await;
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("finch-request-id", v);
    }
    if let Some(i) = seen_at
        && let Some(seen) = s.world().requests.get_mut(i)
    {
        seen.status = response.status().as_u16();
        seen.injected = fault_injected;
    }
    response
}

/// `answer` with its body cut after `after` bytes and the connection then closed: the client
/// reads a 200 announcing the whole length and part of its body, then an error.
async fn broken_off(answer: Response, after: usize) -> Response {
    let (mut parts, body) = answer.into_parts();
    let whole = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let part = whole.slice(..after.min(whole.len().saturating_sub(1)));
    parts.headers.insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from(whole.len()));
    // The part, then a pause (the server writes out what it has), then the connection is lost.
    let (mut part, mut step) = (Some(part), 0);
    let chunks = futures_util::stream::poll_fn(move |cx| {
        step += 1;
        match step {
            1 => std::task::Poll::Ready(part.take().map(Ok)),
            2 => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
            _ => std::task::Poll::Ready(Some(Err(std::io::Error::other("the connection was lost")))),
        }
    });
    Response::from_parts(parts, axum::body::Body::from_stream(chunks))
}

/// Recorded on arrival: a request whose client gave up (timeout) still counts as sent. Returns
/// its place in the log, for the status once answered.
fn record_arrival(s: &Shared, method: &str, path: &str, request_id: &str) -> usize {
    let mut w = s.world();
    w.requests.push(Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        status: 0,
        request_id: request_id.to_owned(),
        injected: false,
    });
    w.requests.len() - 1
}

/// Finch's rate limits, then an injected fault: the answer instead of the real handler, and
/// whether it was an injected fault (a 429 from the limits is Finch's own behaviour).
async fn gate(s: &Shared, method: &str, path: &str) -> Option<(Response, bool)> {
    let limited = {
        let mut w = s.world();
        match w.rate_limits.clone() {
            Some(limits) => {
                // Application limits are per product (endpoint) across every token of the
                // application (DATA.md §1.10); the IP limit counts every request.
                let product = path.strip_prefix("/employer/").map(|p| ("application".to_owned(), p.to_owned()));
                w.rate_state.admit(&limits, product)
            }
            None => None,
        }
    };
    if let Some(code) = limited {
        let body = json!({"statusCode": 429, "status": 429, "code": 429, "message": "Too many requests", "name": "rate_limit_exceeded_error", "finch_code": code});
        return Some((api::finch_error(429, body), false));
    }
    let fault = s.world().take_fault(method, path)?;
    if let Some(name) = &fault.hold {
        s.holds().pass(name).await;
    }
    if let Some(ms) = fault.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = fault.status?;
    Some((injected(status, fault.retry_after, fault.location.as_deref()), true))
}

/// The request body read (bounded) and checked against the operation in Finch's spec; in
/// strict mode a violation is refused as Finch would, else recorded.
async fn inbound(s: &Shared, op: Option<&spec::Operation>, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return Err(api::finch_error(
            413,
            json!({"code": 413, "name": "payload_too_large", "message": "Body too large"}),
        ));
    };
    if let Some(op) = op {
        // A problem quotes the offending value, which can be a whole 10,000-item array: kept
        // short, for the log and the 400 alike.
        let problems: Vec<String> = check_request(op, &parts.headers, &bytes).into_iter().map(shorten).collect();
        if !problems.is_empty() {
            tracing::warn!(?problems, "request violates Finch's spec");
            s.world().violations.extend(problems.iter().cloned());
            // Where Finch documents a 422 for a request it cannot take (over a batch or page
            // cap), the handler answers as Finch does; the violation is still recorded.
            if s.config().strict && !spec::spec().documents_response(op, 422) {
                return Err(api::finch_error(
                    400,
                    json!({"code": 400, "name": "bad_request", "finch_code": "invalid_request", "message": problems.join("; ")}),
                ));
            }
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The answer checked against the spec (an injected fault is not the emulator's own answer).
async fn outbound(s: &Shared, op: &spec::Operation, response: Response, fault_injected: bool) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_RESPONSE).await.unwrap_or_default();
    let status = parts.status.as_u16();
    if !fault_injected
        && spec::spec().documents_response(op, status)
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        let problems = spec::spec().check_response_body(op, status, &v);
        if !problems.is_empty() {
            tracing::error!(?problems, "emulator response violates Finch's spec");
            s.world().violations.extend(problems);
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A problem's text, cut to a readable length.
fn shorten(problem: String) -> String {
    const MAX: usize = 300;
    if problem.len() <= MAX {
        return problem;
    }
    let cut = (0..=MAX).rev().find(|i| problem.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} characters)", &problem[..cut], problem.len())
}

fn check_request(op: &spec::Operation, headers: &axum::http::HeaderMap, body: &Bytes) -> Vec<String> {
    let mut problems = Vec::new();
    let what = format!("{} {}", op.method.to_uppercase(), op.path);
    if op.requires_version_header {
        match headers.get("finch-api-version").and_then(|v| v.to_str().ok()) {
            Some("2020-09-17") => {}
            Some(other) => problems.push(format!("{what}: Finch-API-Version is {other:?}, not 2020-09-17")),
            None => problems.push(format!("{what}: Finch-API-Version header missing")),
        }
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    for scheme in &op.security {
        let ok = match scheme.as_str() {
            "basicAuth" => auth.starts_with("Basic "),
            "bearerAuth" => auth.starts_with("Bearer "),
            _ => true,
        };
        if !ok {
            problems.push(format!("{what}: expected {scheme} authorization"));
        }
    }
    if op.has_json_body {
        if body.is_empty() {
            if op.body_required {
                problems.push(format!("{what}: request body required"));
            }
        } else {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !ct.starts_with("application/json") {
                problems.push(format!("{what}: Content-Type must be application/json, got {ct:?}"));
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => problems.extend(spec::spec().check_request_body(op, &v)),
                Err(e) => problems.push(format!("{what}: body is not JSON: {e}")),
            }
        }
    } else if !body.is_empty() {
        problems.push(format!("{what}: takes no request body"));
    }
    problems
}

/// The control routes' 404.
pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({"error": "not found"}))).into_response()
}
