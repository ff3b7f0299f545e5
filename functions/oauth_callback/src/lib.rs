//! The end of a Connect flow.
//!
//! - `GET /connect/callback?code&state`: the employer's browser, redirected by Finch. The
//!   state identifies the customer; success is a 302 to the app (never carrying the token).
//! - `POST /connect/callback {code, state?}`: the app's frontend after the embedded flow's
//!   `onSuccess`, authenticated by the JWT; success is JSON.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::domain::{AuthorizationCode, FlowMode};
use perch::flows::callback::{self, CallbackInput, CallbackOutcome, Outcome};
use perch::http::{
    customer_from_claims, error_response, json_body, json_response, query_param, redirect_response, request_id,
};
use perch::runtime::Service;
use perch::{AppState, Error};
use serde::Deserialize;

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms, Service::SecretsManager, Service::EventBridge, Service::Finch];

/// The embedded flow's body. Deserialised from raw strings so no value is ever echoed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedBody {
    code: String,
    #[serde(default)]
    state: Option<String>,
}

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let result = match *req.method() {
        Method::GET => redirect_flow(app, &req).await.map(|o| redirect_response(&return_url(&app.config, &o))),
        Method::POST => embedded_flow(app, &req).await.map(|o| {
            let status = if o.outcome == Outcome::Created { 201 } else { 200 };
            json_response(status, &o)
        }),
        _ => Err(Error::invalid("method_not_allowed", "Use GET (redirect flow) or POST (embedded flow).")),
    };
    result.unwrap_or_else(|e| error_response(&e, request_id(&req)))
}

async fn redirect_flow<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<CallbackOutcome, Error> {
    let code =
        query_param(req, "code")?.ok_or_else(|| Error::invalid("code_invalid", "The callback carries no code."))?;
    let state = query_param(req, "state")?;
    let input = CallbackInput { code: AuthorizationCode::parse(&code)?, state, mode: FlowMode::Redirect, caller: None };
    callback::complete_callback(app, input).await
}

async fn embedded_flow<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<CallbackOutcome, Error> {
    let caller = customer_from_claims(req, &app.config.customer_claim)?;
    // The body holds a code: report its shape problems without serde's echo of values.
    let body: EmbeddedBody = json_body::<serde_json::Value>(req).and_then(|v| {
        serde_json::from_value(v)
            .map_err(|_| Error::invalid("invalid_body", "The body must be {\"code\": string, \"state\"?: string}."))
    })?;
    let input = CallbackInput {
        code: AuthorizationCode::parse(&body.code)?,
        state: body.state,
        mode: FlowMode::Embedded,
        caller: Some(caller),
    };
    callback::complete_callback(app, input).await
}

/// Where the browser goes next: the app, told which connection and what happened.
fn return_url(config: &perch::Config, o: &CallbackOutcome) -> String {
    let mut url = config.app_return_url.clone();
    url.query_pairs_mut()
        .append_pair("connection_id", o.connection.connection_id.as_str())
        .append_pair("outcome", o.outcome.as_str())
        .append_pair("status", o.connection.status.as_str());
    url.to_string()
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json, with_query};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    fn app() -> AppState<perch::memory::Memory> {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap().0
    }

    async fn code_of(req: Request) -> (u16, Option<String>) {
        let r = handle(&app(), req).await;
        (r.status().as_u16(), json(&r)["code"].as_str().map(str::to_owned))
    }

    #[tokio::test]
    async fn the_redirect_needs_a_code_and_a_state() {
        let get = || api_request(Method::GET, "/connect/callback", None, None);
        assert_eq!(code_of(get()).await, (400, Some("code_invalid".into())));
        assert_eq!(code_of(with_query(get(), &[("code", "c-1")])).await, (400, Some("state_invalid".into())));
        let twice = with_query(get(), &[("code", "c-1"), ("code", "c-2")]);
        assert_eq!(code_of(twice).await, (400, Some("invalid_query".into())));
        let forged = with_query(get(), &[("code", "c-1"), ("state", "forged")]);
        assert_eq!(code_of(forged).await, (400, Some("state_invalid".into())));
    }

    #[tokio::test]
    async fn the_embedded_flow_needs_a_signed_in_caller_and_a_code_shaped_body() {
        let post = |body: &str, customer| api_request(Method::POST, "/connect/callback", Some(body), customer);
        assert_eq!(code_of(post(r#"{"code":"c-1"}"#, None)).await.0, 401);
        assert_eq!(code_of(post(r#"{"code":7}"#, Some("acme"))).await, (400, Some("invalid_body".into())));
        assert_eq!(code_of(post(r#"{"code":"has space"}"#, Some("acme"))).await, (400, Some("code_invalid".into())));
        let r = handle(&app(), api_request(Method::PUT, "/connect/callback", None, None)).await;
        assert_eq!(r.status().as_u16(), 400);
    }
}
