//! `GET /connections/{id}/sync`: where the sync of each of the connection's entities stands
//! (waiting for Finch and why, syncing, current with Finch's snapshot time and request ids,
//! needs reauth, missing scope, error with its reason).
//!
//! `POST /connections/{id}/sync`: asks for a run now — 202 with `queued: true` — unless one
//! is queued or running, in which case nothing changes (`queued: false`): idempotent while a
//! run is in flight. Another customer's connection is a 404 for both.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::sync::view;
use perch::http::{customer_from_claims, error_response, json_response, path_param, request_id};
use perch::runtime::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Sqs];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let answer = async {
        let customer = customer_from_claims(&req, &app.config.customer_claim)?;
        let id = path_param(&req, "id", "connection")?;
        perch::http::RequestSpan::record_connection(id);
        if req.method() == Method::POST {
            let asked = view::request_sync(app, &customer, id).await?;
            Ok::<_, Error>(json_response(202, &asked))
        } else {
            Ok(json_response(200, &view::sync_view(app, &customer, id).await?))
        }
    };
    answer.await.unwrap_or_else(|e| error_response(&e, request_id(&req)))
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
        for method in [Method::GET, Method::POST] {
            let req =
                with_path(api_request(method.clone(), "/connections/c-1/sync", None, Some("acme")), &[("id", "c-1")]);
            let r = handle(&app, req).await;
            assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (404, Some("not_found")), "{method}");
            let r = handle(&app, api_request(method, "/connections/c-1/sync", None, None)).await;
            assert_eq!(r.status().as_u16(), 401);
        }
    }
}
