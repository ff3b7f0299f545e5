//! `GET /connections?limit&cursor`: the caller's connections, from the `by_customer` index.

use lambda_http::{Body, Request, Response};
use perch::connect;
use perch::http::{customer_from_claims, error_response, json_response, query_param, request_id};
use perch::lazy::Service;
use perch::store::ConnectionSummary;
use perch::{AppState, Error};
use serde::Serialize;

/// The services this function calls besides DynamoDB (none): their clients are built in init
/// (`AppState::prewarm`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[];

#[derive(Serialize)]
struct Listing {
    connections: Vec<ConnectionSummary>,
    next_cursor: Option<String>,
}

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle(app: &AppState, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(listing) => json_response(200, &listing),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run(app: &AppState, req: &Request) -> Result<Listing, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let limit = query_param(req, "limit")?;
    let cursor = query_param(req, "cursor")?;
    let page = connect::list_connections(app, &customer, limit.as_deref(), cursor.as_deref()).await?;
    Ok(Listing { connections: page.items, next_cursor: page.next_cursor })
}
