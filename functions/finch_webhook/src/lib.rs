//! `POST /finch/webhooks`: Finch's webhook deliveries, verified against `finch-signature` and
//! applied at once (see `perch::webhook`). No JWT: the signature is the authentication.

use lambda_http::{Body, Request, Response};
use perch::http::{error_response, json_response, request_id};
use perch::lazy::Service;
use perch::{AppState, Error, webhook};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::prewarm`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::SecretsManager, Service::EventBridge];

/// Larger than any Finch event; refuses abuse before any work.
const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// Handles one delivery; every anticipated failure is a problem response, never an `Err`.
pub async fn handle(app: &AppState, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(outcome) => json_response(200, &outcome),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run(app: &AppState, req: &Request) -> Result<webhook::Outcome, Error> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_WEBHOOK_BYTES {
        return Err(Error::PayloadTooLarge { limit: MAX_WEBHOOK_BYTES });
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    webhook::handle(app, header("finch-event-id"), header("finch-timestamp"), header("finch-signature"), body).await
}
