//! A Lambda Runtime API emulator on loopback, one per function process.
//!
//! It speaks the part of the protocol a function uses — `GET …/invocation/next`, `POST
//! …/invocation/{id}/response`, `…/{id}/error` and `…/init/error` — and hands the harness the
//! moments that matter: when the process first asks for work (init is over) and when each
//! response arrives. Events are delivered one at a time, only while the function is waiting,
//! as Lambda does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc};

/// What the function did, as the emulator saw it.
#[derive(Debug)]
pub enum Seen {
    /// The function asked for its next event.
    Next(Instant),
    /// The function answered an invocation: (request id, status the function reported, body).
    Response { at: Instant, ok: bool, body: Bytes },
    /// The function reported an init error.
    InitError(String),
}

struct Inner {
    /// How long each invocation may run (Lambda's timeout).
    timeout: Duration,
    /// Events waiting for the function's next `GET /next`.
    events: Mutex<mpsc::Receiver<(String, Bytes)>>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// A running emulator: `addr` goes into `AWS_LAMBDA_RUNTIME_API`.
pub struct RuntimeApi {
    pub addr: String,
    events: mpsc::Sender<(String, Bytes)>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
    counter: u64,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// An emulator whose invocations may run for `timeout` (the deadline each event carries).
    pub async fn start(timeout: Duration) -> std::io::Result<Self> {
        let (events_tx, events_rx) = mpsc::channel(1);
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner { timeout, events: Mutex::new(events_rx), seen: seen_tx });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, events: events_tx, seen: seen_rx, server, counter: 0 })
    }

    /// Waits for the function to ask for work (or to fail its init).
    pub async fn wait_next(&mut self, limit: Duration) -> Result<Instant, String> {
        match tokio::time::timeout(limit, self.seen.recv()).await {
            Ok(Some(Seen::Next(at))) => Ok(at),
            Ok(Some(Seen::InitError(e))) => Err(format!("init error: {e}")),
            Ok(Some(other)) => Err(format!("expected GET /next, saw {other:?}")),
            Ok(None) => Err("the emulator stopped".into()),
            Err(_) => Err(format!("no GET /next within {limit:?}")),
        }
    }

    /// Delivers one event (the function must be waiting in `GET /next`); returns when it was
    /// handed over.
    pub async fn deliver(&mut self, event: Bytes) -> Instant {
        self.counter += 1;
        let id = format!("bench-{:08}", self.counter);
        let at = Instant::now();
        // Capacity 1 and the function already waiting: this hands over at once.
        let _ = self.events.send((id, event)).await;
        at
    }

    /// Waits for the answer to the event just delivered.
    pub async fn wait_response(&mut self, limit: Duration) -> Result<(Instant, bool, Bytes), String> {
        match tokio::time::timeout(limit, self.seen.recv()).await {
            Ok(Some(Seen::Response { at, ok, body })) => Ok((at, ok, body)),
            Ok(Some(other)) => Err(format!("expected a response, saw {other:?}")),
            Ok(None) => Err("the emulator stopped".into()),
            Err(_) => Err(format!("no response within {limit:?}")),
        }
    }
}

async fn next(State(s): State<Arc<Inner>>) -> Response {
    let _ = s.seen.send(Seen::Next(Instant::now()));
    let Some((id, body)) = s.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = std::time::SystemTime::now() + s.timeout;
    let deadline_ms = deadline.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:bench".into());
    set("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Parent=0;Sampled=0".into());
    set("content-type", "application/json".into());
    (headers, body).into_response()
}

async fn response(State(s): State<Arc<Inner>>, Path(_id): Path<String>, body: Bytes) -> StatusCode {
    let _ = s.seen.send(Seen::Response { at: Instant::now(), ok: true, body });
    StatusCode::ACCEPTED
}

async fn error(State(s): State<Arc<Inner>>, Path(_id): Path<String>, body: Bytes) -> StatusCode {
    let _ = s.seen.send(Seen::Response { at: Instant::now(), ok: false, body });
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    let _ = s.seen.send(Seen::InitError(String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}
