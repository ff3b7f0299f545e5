//! `DELETE /connections/{id}`: disconnects one of the caller's connections at Finch and destroys
//! its token (404 for anyone else's). Idempotent: 204 whether this call or an earlier one
//! finished the job.

use lambda_http::{Body, Request, RequestExt, Response};
use perch::http::{customer_from_claims, error_response, no_content, request_id};
use perch::lazy::Service;
use perch::{AppState, Error, lifecycle};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::prewarm`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::EventBridge, Service::Finch];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle(app: &AppState, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(()) => no_content(),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run(app: &AppState, req: &Request) -> Result<(), Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let id = req.path_parameters_ref().and_then(|p| p.first("id")).ok_or(Error::NotFound("connection"))?;
    lifecycle::disconnect(app, &customer, id).await.map(|_| ())
}
