//! `/_emulator/*`: what a test or a person needs to steer the emulator.
//!
//! - `POST /_emulator/connections/{id}/status {"status": "reauth"}` — flip a connection;
//! - `GET /_emulator/connections` — every connection held;
//! - `POST /_emulator/faults {path?, method?, status?, latency_ms?, retry_after?, times?}`,
//!   `DELETE /_emulator/faults` — inject or clear faults;
//! - `POST /_emulator/clock {"advance_seconds": 601}` — move time forward (code expiry);
//! - `GET /_emulator/requests`, `GET /_emulator/violations` — what was seen.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::world::Fault;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/_emulator/connections", get(connections))
        .route("/_emulator/connections/{id}/status", post(set_status))
        .route("/_emulator/faults", post(add_fault).delete(clear_faults))
        .route("/_emulator/clock", post(clock))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/violations", get(violations))
        .route("/_emulator/health", get(|| async { Json(json!({"ok": true})) }))
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
}

async fn set_status(State(s): State<Shared>, Path(id): Path<String>, Json(b): Json<StatusBody>) -> Response {
    let mut w = s.world();
    match w.connections.get_mut(&id) {
        Some(c) => {
            c.status = b.status;
            Json(c.clone()).into_response()
        }
        None => crate::not_found(),
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
