//! `DELETE /connections/{id}`: disconnects one of the caller's connections at Finch and destroys
//! its token (404 for anyone else's). Idempotent: 204 whether this call or an earlier one
//! finished the job.
//!
//! `DELETE /connections/{id}/entities/{entity_id}`: disconnects one entity of a multi-entity
//! connection (Finch's `/disconnect-entity`); the last one disconnects the connection. Same
//! answers; an entity the connection does not list is a 404.

use lambda_http::{Body, Request, RequestExt, Response};
use perch::app::Adapters;
use perch::flows::lifecycle;
use perch::http::{customer_from_claims, error_response, no_content, path_param, request_id};
use perch::runtime::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::EventBridge, Service::Finch, Service::Sqs];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(()) => no_content(),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<(), Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let id = path_param(req, "id", "connection")?;
    perch::http::RequestSpan::record_connection(id);
    match req.path_parameters_ref().and_then(|p| p.first("entity_id")) {
        Some(entity) => lifecycle::disconnect_entity(app, &customer, id, entity).await.map(|_| ()),
        None => lifecycle::disconnect(app, &customer, id).await.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json, with_path};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    #[tokio::test]
    async fn an_id_the_caller_does_not_hold_is_a_404_and_no_claim_a_401() {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        let (app, _) = AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap();
        let req = with_path(api_request(Method::DELETE, "/connections/c-1", None, Some("acme")), &[("id", "c-1")]);
        let r = handle(&app, req).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (404, Some("not_found")));
        assert_eq!(r.headers()["cache-control"], "no-store");
        let r = handle(&app, api_request(Method::DELETE, "/connections/c-1", None, None)).await;
        assert_eq!(r.status().as_u16(), 401);
    }
}
