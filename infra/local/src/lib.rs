//! Perch on localhost: every function on the routes of `template.yaml`, behind a stand-in for
//! API Gateway's JWT authorizer.
//!
//! Each route calls the same `handle(&AppState, lambda_http::Request)` the Lambda binary
//! calls, with the request shaped as API Gateway (HTTP API, payload v2) would deliver it:
//! query parameters parsed, path parameters set, and — on JWT routes — the verified token's
//! claims in `requestContext.authorizer.jwt.claims`, flattened to strings as API Gateway does.
//! So the handler code path is production's; only the authorizer is local.
//!
//! The development issuer (`POST /dev/token`) signs HS256 tokens with a key made at start-up;
//! it exists only here, never in `template.yaml`. The connections page (`web/`) is served at
//! `/` next to the API it calls ([`web`]).

pub mod bootstrap;
pub mod web;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, post};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Body as LambdaBody, RequestExt};
use perch::AppState;
use perch::aws::Aws;
use serde::Deserialize;
use serde_json::{Value, json};

/// Which function serves a route, and whether the route sits behind the JWT authorizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    CreateConnectSession,
    OauthCallback,
    ListConnections,
    CreateReauthSession,
    Disconnect,
    FinchWebhook,
    ConnectionSync,
    ConnectionData,
}

impl Function {
    /// The function's binary (and package) name, as `template.yaml` builds it.
    pub fn binary(self) -> &'static str {
        match self {
            Self::CreateConnectSession => "create-connect-session",
            Self::OauthCallback => "oauth-callback",
            Self::ListConnections => "list-connections",
            Self::CreateReauthSession => "create-reauth-session",
            Self::Disconnect => "disconnect",
            Self::FinchWebhook => "finch-webhook",
            Self::ConnectionSync => "connection-sync",
            Self::ConnectionData => "connection-data",
        }
    }
}

/// The routes of `template.yaml` (a test keeps the two in step).
pub const ROUTES: &[(&str, &str, Function, bool)] = &[
    ("POST", "/connect/sessions", Function::CreateConnectSession, true),
    ("GET", "/connect/callback", Function::OauthCallback, false),
    ("POST", "/connect/callback", Function::OauthCallback, true),
    ("GET", "/connections", Function::ListConnections, true),
    ("POST", "/connections/{id}/reauthenticate", Function::CreateReauthSession, true),
    ("DELETE", "/connections/{id}", Function::Disconnect, true),
    ("DELETE", "/connections/{id}/entities/{entity_id}", Function::Disconnect, true),
    ("POST", "/finch/webhooks", Function::FinchWebhook, false),
    ("GET", "/connections/{id}/sync", Function::ConnectionSync, true),
    ("POST", "/connections/{id}/sync", Function::ConnectionSync, true),
    ("GET", "/connections/{id}/changes", Function::ConnectionData, true),
    ("GET", "/connections/{id}/employees", Function::ConnectionData, true),
    ("GET", "/people", Function::ConnectionData, true),
    ("GET", "/people/{person_id}", Function::ConnectionData, true),
];

/// Matches a concrete path against a route template, returning the path parameters.
pub fn match_template(template: &str, path: &str) -> Option<HashMap<String, String>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = HashMap::new();
    for (a, b) in t.iter().zip(&p) {
        match a.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            Some(name) if !b.is_empty() => {
                let decoded =
                    url::form_urlencoded::parse(format!("v={b}").as_bytes()).next().map(|(_, v)| v.into_owned());
                params.insert(name.to_owned(), decoded.unwrap_or_default());
            }
            Some(_) => return None,
            None if a == b => {}
            None => return None,
        }
    }
    Some(params)
}

/// The development JWT issuer and verifier (API Gateway's authorizer, locally).
#[derive(Clone)]
pub struct DevAuth {
    key: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub customer_claim: String,
}

impl DevAuth {
    /// A fresh random signing key.
    pub fn random(issuer: String, audience: String, customer_claim: String) -> std::io::Result<Self> {
        let mut key = vec![0u8; 32];
        getrandom_fill(&mut key)?;
        Ok(Self { key, issuer, audience, customer_claim })
    }

    /// Issues a token for `customer`, valid for `ttl_secs` (past the end of time it never
    /// expires; a negative one has already).
    pub fn issue(&self, customer: &str, ttl_secs: i64) -> Result<String, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": format!("dev-user@{customer}"),
            "iat": now, "exp": now.saturating_add(ttl_secs), self.customer_claim.as_str(): customer,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.key))
    }

    /// Issues a token with exactly these extra claims (for tests of odd or missing claims).
    pub fn issue_claims(&self, extra: &serde_json::Map<String, Value>) -> Result<String, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(self.audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 600));
        claims.extend(extra.clone());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.key))
    }

    /// Verifies a bearer token like API Gateway's JWT authorizer: signature, issuer, audience,
    /// expiry. Returns the claims flattened to strings.
    pub fn verify(&self, headers: &HeaderMap) -> Option<HashMap<String, String>> {
        let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &DecodingKey::from_secret(&self.key), &v)
                .ok()?;
        Some(
            data.claims
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect(),
        )
    }
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(e.to_string()))
}

struct Local {
    app: Arc<AppState<Aws>>,
    /// A function's own state where it has one (tests give each function its own AWS
    /// identity, as each Lambda has its own role); otherwise `app`.
    per_function: HashMap<Function, Arc<AppState<Aws>>>,
    auth: DevAuth,
    /// Concurrent invocations, as Lambda's concurrency would bound them; the rest queue.
    /// Without it, a burst opens as many connections to the AWS emulator as there are
    /// requests, which a single emulator process cannot accept.
    slots: tokio::sync::Semaphore,
    /// The connections page's files.
    web_dir: std::path::PathBuf,
    /// The Finch (emulator) origin: Connect's iframe comes from it, its dashboard is on it.
    finch_origin: String,
}

/// Concurrent invocations served at once (`LOCAL_CONCURRENCY`, default 32).
fn local_concurrency() -> usize {
    std::env::var("LOCAL_CONCURRENCY").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(32)
}

/// The local API: Perch's routes plus the development token issuer.
pub fn router(app: Arc<AppState<Aws>>, auth: DevAuth) -> Router {
    router_per_function(app, HashMap::new(), auth)
}

/// The local API with some functions on a state of their own (see [`Local::per_function`]).
pub fn router_per_function(
    app: Arc<AppState<Aws>>,
    per_function: HashMap<Function, Arc<AppState<Aws>>>,
    auth: DevAuth,
) -> Router {
    let slots = tokio::sync::Semaphore::new(local_concurrency());
    let finch_origin = app.config.finch_api_url.origin().ascii_serialization();
    let state = Arc::new(Local { app, per_function, auth, slots, web_dir: web::web_dir(), finch_origin });
    let mut r: Router<Arc<Local>> = Router::new()
        .route("/dev/token", post(dev_token).get(dev_token_get))
        .route("/dev/sweep", post(dev_sweep))
        .route("/dev/sync/schedule", post(dev_sync_schedule))
        .route("/dev/config", get(dev_config));
    for &(path, file, content_type) in web::FILES {
        r = r.route(
            path,
            get(move |State(s): State<Arc<Local>>| async move {
                web::serve(&s.web_dir, file, content_type, &s.finch_origin).await
            }),
        );
    }
    // Perch's own routes, from the one table (axum's `{id}` is the template's syntax too).
    let mut api: Vec<(&str, axum::routing::MethodRouter<Arc<Local>>)> = Vec::new();
    for (method, path, ..) in ROUTES {
        let filter = match *method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "DELETE" => MethodFilter::DELETE,
            other => panic!("ROUTES names a method the local router does not serve: {other}"),
        };
        match api.iter_mut().find(|(p, _)| p == path) {
            Some((_, m)) => *m = std::mem::take(m).on(filter, dispatch),
            None => api.push((path, axum::routing::on(filter, dispatch))),
        }
    }
    for (path, methods) in api {
        r = r.route(path, methods);
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))) }).with_state(state)
}

/// `GET /dev/config`: tells the connections page it runs on the local stack.
async fn dev_config(State(s): State<Arc<Local>>) -> Response {
    axum::Json(json!({"finch_dashboard_url": format!("{}/_emulator/", s.finch_origin)})).into_response()
}

/// `POST /dev/sweep`: one status-check round now, inline (the deployed sweep fans out over
/// SQS on a schedule), checking every connection regardless of when it was last checked.
async fn dev_sweep(State(s): State<Arc<Local>>) -> Response {
    let mut settings = match perch::flows::sweep::SweepSettings::from_env() {
        Ok(x) => x,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": e.to_string()}))).into_response();
        }
    };
    settings.recheck_after = std::time::Duration::ZERO;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    match perch::flows::sweep::run_round(&s.app, &settings, deadline).await {
        Ok(r) => axum::Json(
            json!({"checked": r.checked, "changed": r.changed, "superseded": r.superseded, "failed": r.failed}),
        )
        .into_response(),
        Err(e) => perch::http::error_response(&e, None).map(|b| axum::body::Body::from(b.to_vec())),
    }
}

/// `POST /dev/sync/schedule`: the sync schedule's turn now (deployed, EventBridge runs it every
/// few minutes): every entity due is sent to the sync queue.
async fn dev_sync_schedule(State(s): State<Arc<Local>>) -> Response {
    match worker::schedule(&s.app).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": e}))).into_response(),
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    customer_id: String,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

async fn dev_token(State(s): State<Arc<Local>>, axum::Json(req): axum::Json<TokenRequest>) -> Response {
    issue_response(&s, &req.customer_id, req.ttl_seconds.unwrap_or(3600))
}

async fn dev_token_get(
    State(s): State<Arc<Local>>,
    axum::extract::Query(q): axum::extract::Query<TokenRequest>,
) -> Response {
    issue_response(&s, &q.customer_id, q.ttl_seconds.unwrap_or(3600))
}

/// The longest development token `/dev/token` issues (30 days).
const DEV_TOKEN_MAX_TTL: i64 = 30 * 86_400;

fn issue_response(s: &Local, customer: &str, ttl: i64) -> Response {
    if !(1..=DEV_TOKEN_MAX_TTL).contains(&ttl) {
        let message = format!("ttl_seconds must be from 1 to {DEV_TOKEN_MAX_TTL}");
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": message}))).into_response();
    }
    match s.auth.issue(customer, ttl) {
        Ok(token) => axum::Json(json!({"token": token, "customer_id": customer, "expires_in": ttl})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": e.to_string()}))).into_response(),
    }
}

/// Shapes the request as API Gateway would and calls the route's function.
async fn dispatch(State(s): State<Arc<Local>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some((&(_, template, function, needs_jwt), params)) = ROUTES
        .iter()
        .filter(|(m, ..)| *m == method.as_str())
        .find_map(|r| match_template(r.1, &path).map(|params| (r, params)))
    else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))).into_response();
    };
    let claims = if needs_jwt {
        match s.auth.verify(req.headers()) {
            Some(c) => Some(c),
            // What API Gateway's JWT authorizer answers.
            None => return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Unauthorized"}))).into_response(),
        }
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({"message": "Request Entity Too Large"})))
            .into_response();
    };
    let lreq = to_lambda(&parts, bytes, &method, template, claims, params);
    let Ok(_slot) = s.slots.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"message": "Service Unavailable"})))
            .into_response();
    };
    let app = s.per_function.get(&function).unwrap_or(&s.app);
    let resp = match function {
        Function::CreateConnectSession => create_connect_session::handle(app, lreq).await,
        Function::OauthCallback => oauth_callback::handle(app, lreq).await,
        Function::ListConnections => list_connections::handle(app, lreq).await,
        Function::CreateReauthSession => create_reauth_session::handle(app, lreq).await,
        Function::Disconnect => disconnect::handle(app, lreq).await,
        Function::FinchWebhook => finch_webhook::handle(app, lreq).await,
        Function::ConnectionSync => connection_sync::handle(app, lreq).await,
        Function::ConnectionData => connection_data::handle(app, lreq).await,
    };
    from_lambda(resp)
}

fn to_lambda(
    parts: &axum::http::request::Parts,
    bytes: Bytes,
    method: &Method,
    template: &str,
    claims: Option<HashMap<String, String>>,
    params: HashMap<String, String>,
) -> lambda_http::Request {
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            query.entry(k.into_owned()).or_default().push(v.into_owned());
        }
    }
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.route_key = Some(format!("{method} {template}"));
    ctx.request_id = Some(uuid_like());
    ctx.stage = Some("$default".into());
    ctx.http.method = method.clone();
    ctx.http.path = Some(parts.uri.path().to_owned());
    if let Some(claims) = claims {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        ctx.authorizer = Some(authorizer);
    }
    let body = if bytes.is_empty() { LambdaBody::Empty } else { LambdaBody::Binary(bytes.to_vec()) };
    let mut builder = lambda_http::http::Request::builder().method(method.clone()).uri(parts.uri.clone());
    for (k, v) in &parts.headers {
        builder = builder.header(k, v);
    }
    let req = builder.body(body).unwrap_or_default();
    req.with_query_string_parameters(query)
        .with_path_parameters(params)
        .with_request_context(RequestContext::ApiGatewayV2(ctx))
}

fn uuid_like() -> String {
    perch::crypto::state::random_id(12).unwrap_or_else(|_| "local".to_owned())
}

fn from_lambda(resp: lambda_http::Response<LambdaBody>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        LambdaBody::Empty => Vec::new(),
        LambdaBody::Text(t) => t.into_bytes(),
        LambdaBody::Binary(b) => b,
        _ => Vec::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
