//! `POST /connect/sessions`: a Finch Connect session for the caller's customer.
//!
//! The customer comes from the JWT claims; the body only shapes the session (flow, products,
//! sandbox, provider, expiry). Answers 201 `{session_id, connect_url, …}`.

use lambda_http::{Body, Request, Response};
use perch::connect::{self, NewSessionRequest};
use perch::http::{customer_from_claims, error_response, json_body, json_response, request_id};
use perch::lazy::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::prewarm`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::SecretsManager, Service::Finch];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle(app: &AppState, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(session) => json_response(201, &session),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run(app: &AppState, req: &Request) -> Result<connect::NewSession, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let body: NewSessionRequest = json_body(req)?;
    connect::create_session(app, &customer, &body).await
}
