//! `POST /connect/sessions`: a Finch Connect session for the caller's customer.
//!
//! The customer comes from the JWT claims; the body only shapes the session (flow, products,
//! sandbox, provider, expiry). Answers 201 `{session_id, connect_url, …}`.

use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::session::{self, NewSessionRequest};
use perch::http::{customer_from_claims, error_response, json_body, json_response, request_id};
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

async fn run<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<session::NewSession, Error> {
    let customer = customer_from_claims(req, &app.config.customer_claim)?;
    let body: NewSessionRequest = json_body(req)?;
    session::create_session(app, &customer, &body).await
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    /// Finch is a closed port: a session that gets as far as Finch is a 502.
    fn app() -> AppState<perch::memory::Memory> {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap().0
    }

    async fn post(body: &str, customer: Option<&str>) -> (u16, lambda_http::http::HeaderMap, serde_json::Value) {
        let r = handle(&app(), api_request(Method::POST, "/connect/sessions", Some(body), customer)).await;
        let v = json(&r);
        (r.status().as_u16(), r.headers().clone(), v)
    }

    #[tokio::test]
    async fn the_customer_comes_from_the_claims_only() {
        let (status, _, v) = post(r#"{"products":["company"]}"#, None).await;
        assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")));
        let (status, _, v) = post(r#"{"products":["company"],"customer_id":"evil"}"#, Some("acme")).await;
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_body")));
    }

    #[tokio::test]
    async fn bad_bodies_are_400s_before_finch_is_called() {
        for (body, code) in [
            (r#"{"products":["payroll"]}"#, "invalid_body"),
            (r#"{"products":[]}"#, "invalid_products"),
            (r#"{"products":["company"],"minutes_to_expire":0}"#, "invalid_minutes_to_expire"),
            ("not json", "invalid_body"),
        ] {
            let (status, _, v) = post(body, Some("acme")).await;
            assert_eq!((status, v["code"].as_str()), (400, Some(code)), "{body}");
            assert_eq!(v["type"].as_str(), Some(format!("urn:perch:problem:{code}").as_str()));
        }
    }

    #[tokio::test]
    async fn finch_out_of_reach_is_a_502_problem() {
        let (status, headers, v) = post(r#"{"products":["company"]}"#, Some("acme")).await;
        assert_eq!((status, v["code"].as_str()), (502, Some("finch_unreachable")));
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(v["request_id"].as_str(), Some("test-request"));
    }
}
