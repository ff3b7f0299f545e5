//! A fault-injecting proxy in front of the AWS emulators.
//!
//! The functions talk to it through the real AWS SDK; it forwards every request untouched
//! (moto and DynamoDB Local do not check signatures) unless a fault matches the request's
//! `x-amz-target` (`TrentService.Decrypt`, `DynamoDB_20120810.PutItem`,
//! `secretsmanager.GetSecretValue`, …), in which case it answers as AWS does when throttling or
//! failing: the status, the `__type` and the `x-amzn-ErrorType` header the SDK parses.
//!
//! It also records every call as IAM would see it: who signed it (the access key id in the
//! `Authorization` header), the operation (`x-amz-target`) and the JSON request (table, index,
//! key, encryption context, …). `tests/tests/least_privilege.rs` checks those against the
//! template's policies.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One fault: requests whose `x-amz-target` starts with `target` fail `times` times.
#[derive(Debug, Clone)]
pub struct AwsFault {
    pub target: String,
    pub status: u16,
    /// The AWS error code, e.g. `ThrottlingException`.
    pub error_type: String,
    pub times: u32,
    /// Matching requests let through before the fault starts (a fault in the middle of a run).
    pub after: u32,
    /// Only requests whose body contains this (one kind of write among a target's).
    pub body_contains: Option<String>,
}

impl AwsFault {
    /// A fault that outlasts the SDK's own retries (3 attempts in standard mode).
    pub fn outage(target: &str, status: u16, error_type: &str) -> Self {
        Self {
            target: target.to_owned(),
            status,
            error_type: error_type.to_owned(),
            times: 3,
            after: 0,
            body_contains: None,
        }
    }
}

/// One AWS request that reached the proxy.
#[derive(Debug, Clone)]
pub struct AwsCall {
    /// The access key id that signed it.
    pub principal: String,
    /// `x-amz-target`, e.g. `DynamoDB_20120810.PutItem`.
    pub target: String,
    /// The JSON request body (`Null` if it was not JSON).
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    faults: Vec<AwsFault>,
    injected: u32,
    calls: Vec<AwsCall>,
}

/// A running proxy; `url` is the endpoint to give the SDK.
#[derive(Clone)]
pub struct AwsFaults {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl AwsFaults {
    /// Starts a proxy forwarding to `moto` (and DynamoDB's calls to `dynamodb` when given).
    pub async fn start(moto: String, dynamodb: Option<String>) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = (Arc::clone(&inner), moto, dynamodb, reqwest::Client::new());
        let app = axum::Router::new().fallback(forward).with_state(Arc::new(state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    pub fn inject(&self, fault: AwsFault) {
        self.inner.lock().unwrap().faults.push(fault);
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    /// Every request seen so far, faulted or forwarded.
    pub fn calls(&self) -> Vec<AwsCall> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// How many requests were answered with a fault.
    pub fn injected(&self) -> u32 {
        self.inner.lock().unwrap().injected
    }
}

type Shared = Arc<(Arc<Mutex<Inner>>, String, Option<String>, reqwest::Client)>;

async fn forward(State(s): State<Shared>, req: Request) -> Response {
    let (inner, moto, dynamodb, client) = &*s;
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, …`
    let principal = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let fault = {
        let mut i = inner.lock().unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        i.calls.push(AwsCall { principal, target: target.clone(), body });
        let text = String::from_utf8_lossy(&bytes);
        let hit = i.faults.iter().position(|f| {
            target.starts_with(&f.target)
                && f.times > 0
                && f.body_contains.as_deref().is_none_or(|part| text.contains(part))
        });
        let hit = hit.filter(|idx| {
            let f = &mut i.faults[*idx];
            let through = f.after > 0;
            f.after = f.after.saturating_sub(1);
            !through
        });
        hit.map(|idx| {
            i.faults[idx].times -= 1;
            i.injected += 1;
            i.faults[idx].clone()
        })
    };
    if let Some(f) = fault {
        let body = serde_json::json!({"__type": f.error_type, "message": "injected by the test's AWS fault proxy"})
            .to_string();
        let mut r = (StatusCode::from_u16(f.status).unwrap(), body).into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
        r.headers_mut().insert("x-amzn-errortype", HeaderValue::from_str(&f.error_type).unwrap());
        return r;
    }
    let base = match dynamodb {
        Some(d) if target.starts_with("DynamoDB_") => d,
        _ => moto,
    };
    let url = format!("{base}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = client.request(parts.method.clone(), url).body(bytes.to_vec());
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" {
                    r.headers_mut().insert(k, v.clone());
                }
            }
            r
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
