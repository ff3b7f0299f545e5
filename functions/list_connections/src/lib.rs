//! `GET /connections?limit&cursor`: the caller's connections, from the `by_customer` index.

use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::session;
use perch::http::{customer_from_claims, error_response, json_response, query_param, request_id};
use perch::runtime::Service;
use perch::store::ConnectionSummary;
use perch::{AppState, Error};
use serde::Serialize;

/// The services this function calls besides DynamoDB (none): their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[];

#[derive(Serialize)]
struct Listing {
    connections: Vec<ConnectionSummary>,
    next_cursor: Option<String>,
}

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(listing) => json_response(200, &listing),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<Listing, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let limit = query_param(req, "limit")?;
    let cursor = query_param(req, "cursor")?;
    let page = session::list_connections(app, &customer, limit.as_deref(), cursor.as_deref()).await?;
    Ok(Listing { connections: page.items, next_cursor: page.next_cursor })
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json, with_query};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    #[tokio::test]
    async fn a_customer_without_connections_gets_an_empty_page_and_bad_limits_a_400() {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        let (app, _) = AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap();
        let r = handle(&app, api_request(Method::GET, "/connections", None, Some("acme"))).await;
        assert_eq!(r.status().as_u16(), 200);
        let v = json(&r);
        assert_eq!(v["connections"].as_array().map(Vec::len), Some(0));
        assert!(v["next_cursor"].is_null());
        for (k, bad) in [("limit", "0"), ("limit", "101"), ("limit", "ten"), ("cursor", "forged")] {
            let req = with_query(api_request(Method::GET, "/connections", None, Some("acme")), &[(k, bad)]);
            let r = handle(&app, req).await;
            assert_eq!(r.status().as_u16(), 400, "{k}={bad}");
        }
        let req =
            with_query(api_request(Method::GET, "/connections", None, Some("acme")), &[("limit", "1"), ("limit", "2")]);
        assert_eq!(json(&handle(&app, req).await)["code"].as_str(), Some("invalid_query"));
    }
}
