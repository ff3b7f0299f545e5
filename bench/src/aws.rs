//! The AWS endpoint the benchmarked functions talk to: a proxy in front of moto that records,
//! then a stub that replays.
//!
//! A function's warm path makes the same AWS calls in the same order on every invocation.
//! The harness runs two warm-up invocations through to moto (the real SDK against a real
//! emulator), keeping the second one's answers, then replays those answers by operation and
//! position for the measured invocations. The function still builds, signs and sends every
//! request and parses every answer; what is gone is moto's own latency (milliseconds of
//! Python per call), which would otherwise be most of the wall time measured. Every request is
//! counted by operation in both modes.
//!
//! Finch's calls come through here too (no `x-amz-target`): always forwarded to the emulator,
//! never replayed, counted as `finch:METHOD /path`.
//!
//! Replayed answers are matched by operation *and* the kind of item a DynamoDB request names
//! (the prefix of its `pk`: `CONN#`, `FCUST#`, …), so two reads a function makes at once get
//! their own answers whichever arrives first.
//!
//! **Latency.** With [`AwsEndpoint::set_latency`], every answer waits as long as the remote
//! service would take (the callback's critical-path scenario, PERFORMANCE.md G11): each call
//! is then as slow as on AWS, and the calls a function makes at once overlap as they would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Inner {
    replaying: bool,
    /// Forwarding without keeping answers (`pass_through`): for runs whose calls never repeat.
    forgetting: bool,
    /// Answers recorded since the last `record()`, by `x-amz-target`, in order.
    recorded: HashMap<String, Vec<Answer>>,
    /// Per invocation: how many answers of each target were replayed.
    cursor: HashMap<String, usize>,
    /// Requests by `x-amz-target`, since the last `reset_counts()`.
    counts: HashMap<String, u64>,
    /// Requests a replay had no answer for.
    misses: u64,
    /// When set, `Scan` answers a synthetic table of this many connections (see `synthesize`).
    synthetic: Option<u64>,
    /// When set, how long each kind of remote call takes.
    latency: Option<Latency>,
}

/// How long a remote call takes, by service.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub finch_ms: u64,
    pub dynamodb_ms: u64,
    pub kms_ms: u64,
    /// Secrets Manager, EventBridge, SQS.
    pub other_ms: u64,
}

impl Latency {
    fn of(&self, finch_call: bool, target: &str) -> std::time::Duration {
        let ms = if finch_call {
            self.finch_ms
        } else if target.starts_with("DynamoDB") {
            self.dynamodb_ms
        } else if target.starts_with("TrentService") {
            self.kms_ms
        } else {
            self.other_ms
        };
        std::time::Duration::from_millis(ms)
    }
}

/// A running proxy/stub; `url` goes into `AWS_ENDPOINT_URL`.
#[derive(Clone)]
pub struct AwsEndpoint {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl AwsEndpoint {
    /// A proxy forwarding to `moto`, DynamoDB's calls to `AWS_ENDPOINT_URL_DYNAMODB` when set
    /// (DynamoDB Local, as `scripts/bench.sh` starts it: moto copies every table for each
    /// transaction, which a sync's thousands of them cannot wait for), and Finch's to `finch`.
    pub async fn start(moto: String, finch: String) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let dynamodb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| moto.clone());
        let state = Arc::new((Arc::clone(&inner), moto, dynamodb, finch, reqwest::Client::new()));
        let app = axum::Router::new().fallback(serve).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forward to moto, recording the answers from now on.
    pub fn record(&self) {
        let mut i = self.lock();
        (i.replaying, i.forgetting) = (false, false);
        i.recorded.clear();
    }

    /// Forward to moto and keep nothing: every call counted, none replayed (a sync's writes
    /// never repeat, so there is nothing to replay them from).
    pub fn pass_through(&self) {
        let mut i = self.lock();
        (i.replaying, i.forgetting) = (false, true);
        i.recorded.clear();
    }

    /// Answer from the recording from now on.
    pub fn replay(&self) {
        let mut i = self.lock();
        i.replaying = true;
        i.cursor.clear();
    }

    /// A new invocation: replay each operation's answers from the first again.
    pub fn next_invocation(&self) {
        self.lock().cursor.clear();
    }

    /// From now on, `Scan` pages through `n` connections made from the recorded ones, with ids
    /// `00000000-0000-4000-8000-<n>`; everything else still replays. The sweep at any size,
    /// with no table behind it.
    pub fn synthesize(&self, n: Option<u64>) {
        self.lock().synthetic = n;
    }

    /// Every answer from now on takes as long as `latency` says (`None`: as fast as it can).
    pub fn set_latency(&self, latency: Option<Latency>) {
        self.lock().latency = latency;
    }

    pub fn reset_counts(&self) {
        let mut i = self.lock();
        i.counts.clear();
        i.misses = 0;
    }

    /// Requests by operation since the last reset, and replay misses.
    pub fn counts(&self) -> (HashMap<String, u64>, u64) {
        let i = self.lock();
        (i.counts.clone(), i.misses)
    }
}

type Shared = Arc<(Arc<Mutex<Inner>>, String, String, String, reqwest::Client)>;

async fn serve(State(s): State<Shared>, req: Request) -> Response {
    let (inner, moto, dynamodb, finch, client) = &*s;
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let finch_call = target.is_empty();
    let key = if finch_call { format!("finch:{} {}", req.method(), req.uri().path()) } else { target.clone() };
    let (synthetic, latency) = {
        let i = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (i.synthetic, i.latency)
    };
    if let Some(l) = latency {
        tokio::time::sleep(l.of(finch_call, &target)).await;
    }
    if let (Some(n), true) = (synthetic, target.ends_with(".Scan")) {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let mut i = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *i.counts.entry(key).or_default() += 1;
        let template = i.recorded.get(&format!("{target} ")).and_then(|v| v.first()).cloned();
        drop(i);
        let _ = parts;
        return match template {
            Some(a) => synthetic_page(&a, &bytes, n),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "no recorded Scan to synthesize from").into_response(),
        };
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let slot = if finch_call { target.clone() } else { format!("{target} {}", item_kind(&bytes)) };
    let replayed = {
        let mut i = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *i.counts.entry(key).or_default() += 1;
        if i.replaying && !finch_call {
            let n = *i.cursor.get(&slot).unwrap_or(&0);
            let answer = i.recorded.get(&slot).and_then(|v| v.get(n).or_else(|| v.last())).cloned();
            *i.cursor.entry(slot.clone()).or_default() += 1;
            if answer.is_none() {
                i.misses += 1;
            }
            Some(answer)
        } else {
            None
        }
    };
    if let Some(answer) = replayed {
        return match answer {
            Some(a) => respond(&a),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "no recorded answer").into_response(),
        };
    }
    let base = if finch_call {
        finch
    } else if target.starts_with("DynamoDB") {
        dynamodb
    } else {
        moto
    };
    let url = format!("{base}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = client.request(parts.method.clone(), url).body(bytes);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let answer = match out.send().await {
        Ok(r) => {
            let status = r.status();
            let mut headers = r.headers().clone();
            // Hop-by-hop: moto says `Connection: close`, which would make every replayed call
            // open a new connection, as no AWS endpoint does.
            for h in ["content-length", "transfer-encoding", "connection", "keep-alive"] {
                headers.remove(h);
            }
            Answer { status, headers, body: r.bytes().await.unwrap_or_default() }
        }
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if !finch_call {
        let mut i = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !i.forgetting {
            i.recorded.entry(slot).or_default().push(answer.clone());
        }
    }
    respond(&answer)
}

/// The kind of item a DynamoDB request names: its key's `pk` up to `#` (`CONN`, `FCUST`, …);
/// empty for a request without one (a query, a transaction, another service).
fn item_kind(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    v["Key"]["pk"]["S"].as_str().and_then(|pk| pk.split_once('#')).map(|(kind, _)| kind.to_owned()).unwrap_or_default()
}

fn respond(a: &Answer) -> Response {
    let mut r = Response::new(Body::from(a.body.clone()));
    *r.status_mut() = a.status;
    *r.headers_mut() = a.headers.clone();
    r
}

/// One page of the synthetic table: the recorded page's items, cycled, renumbered from the
/// request's `ExclusiveStartKey`, `Limit` at a time.
fn synthetic_page(template: &Answer, request: &[u8], n: u64) -> Response {
    use serde_json::{Value, json};
    let id = |k: u64| format!("00000000-0000-4000-8000-{k:012}");
    let req: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let page: Value = serde_json::from_slice(&template.body).unwrap_or(Value::Null);
    let items = page["Items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the recorded Scan had no items").into_response();
    }
    let limit = req["Limit"].as_u64().unwrap_or(100).max(1);
    let start = req["ExclusiveStartKey"]["pk"]["S"]
        .as_str()
        .and_then(|pk| pk.rsplit('-').next())
        .and_then(|k| k.parse::<u64>().ok())
        .map_or(0, |k| k + 1);
    let end = (start + limit).min(n);
    let out: Vec<Value> = (start..end)
        .map(|k| {
            let mut item = items[(k as usize) % items.len()].clone();
            item["pk"] = json!({"S": format!("CONN#{}", id(k))});
            item["connection_id"] = json!({"S": id(k)});
            item
        })
        .collect();
    let mut body = json!({"Items": out, "Count": end - start, "ScannedCount": end - start});
    if end < n {
        body["LastEvaluatedKey"] = json!({"pk": {"S": format!("CONN#{}", id(end - 1))}});
    }
    let mut r = Response::new(Body::from(body.to_string()));
    *r.headers_mut() = template.headers.clone();
    r
}
