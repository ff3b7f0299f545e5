//! `POST /connections/{id}/reauthenticate`: a Finch reauthentication session for one of the
//! caller's connections (404 for anyone else's). Body (optional):
//! `{flow?, products?, minutes_to_expire?}`; answers 201 like `POST /connect/sessions`.

use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::lifecycle::{self, ReauthRequest};
use perch::flows::session::NewSession;
use perch::http::{customer_from_claims, error_response, json_body, json_response, path_param, request_id};
use perch::runtime::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::SecretsManager, Service::Finch];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(session) => json_response(201, &session),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<NewSession, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let id = path_param(req, "id", "connection")?;
    perch::http::RequestSpan::record_connection(id);
    let body: ReauthRequest = json_body(req)?;
    lifecycle::reauthenticate(app, &customer, id, &body).await
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json, with_path};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    #[tokio::test]
    async fn unknown_foreign_and_malformed_ids_are_404s_and_bad_bodies_400s() {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        let (app, _) = AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap();
        for id in ["c-unknown", "bad id#"] {
            let req = api_request(Method::POST, "/connections/x/reauthenticate", None, Some("acme"));
            let r = handle(&app, with_path(req, &[("id", id)])).await;
            assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (404, Some("not_found")), "{id}");
        }
        let req = api_request(Method::POST, "/connections/x/reauthenticate", Some(r#"{"products":[]}"#), Some("acme"));
        let r = handle(&app, with_path(req, &[("id", "c-1")])).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (400, Some("invalid_products")));
        let r = handle(&app, api_request(Method::POST, "/connections/x/reauthenticate", None, None)).await;
        assert_eq!(r.status().as_u16(), 401);
    }
}
