//! `POST /connections/{id}/reauthenticate`: a Finch reauthentication session for one of the
//! caller's connections (404 for anyone else's). Body (optional):
//! `{flow?, products?, minutes_to_expire?}`; answers 201 like `POST /connect/sessions`.

use lambda_http::{Body, Request, RequestExt, Response};
use perch::connect::NewSession;
use perch::http::{customer_from_claims, error_response, json_body, json_response, request_id};
use perch::lazy::Service;
use perch::lifecycle::{self, ReauthRequest};
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

async fn run(app: &AppState, req: &Request) -> Result<NewSession, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let id = req.path_parameters_ref().and_then(|p| p.first("id")).ok_or(Error::NotFound("connection"))?.to_owned();
    let body: ReauthRequest = json_body(req)?;
    lifecycle::reauthenticate(app, &customer, &id, &body).await
}
