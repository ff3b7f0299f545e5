//! The end of a Connect flow.
//!
//! - `GET /connect/callback?code&state`: the employer's browser, redirected by Finch. The
//!   state identifies the customer. Whatever happens, the browser goes back to the app (302 to
//!   `APP_RETURN_URL`): `outcome=created|reauthenticated|already_connected|duplicate` with the
//!   connection, or `outcome=error` with a stable `reason`, what to do `next` and the request
//!   id — never a raw problem page, never a code, state or token. A Connect that ended without
//!   a code (`error=access_denied`: the employer declined) comes back the same way.
//! - `POST /connect/callback {code, state}`: the app's frontend after the embedded flow's
//!   `onSuccess`, authenticated by the JWT; success is JSON, failure a problem.

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::domain::{AuthorizationCode, FlowMode};
use perch::flows::callback::{self, CallbackInput, CallbackOutcome, Outcome};
use perch::http::{
    customer_from_claims, error_response, failure_redirect, json_body, json_response, query_param, redirect_response,
    request_id,
};
use perch::runtime::Service;
use perch::{AppState, Error};
use serde::Deserialize;

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] =
    &[Service::Kms, Service::SecretsManager, Service::EventBridge, Service::Finch, Service::Sqs];

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
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    match *req.method() {
        Method::GET => match redirect_flow(app, &req).await {
            Ok(o) => redirect_response(&return_url(&app.config, &o)),
            Err(e) => failure_redirect(&app.config.app_return_url, &e, request_id(&req)),
        },
        Method::POST => match embedded_flow(app, &req).await {
            Ok(o) => json_response(if o.outcome == Outcome::Created { 201 } else { 200 }, &o),
            Err(e) => error_response(&e, request_id(&req)),
        },
        _ => error_response(
            &Error::invalid("method_not_allowed", "Use GET (redirect flow) or POST (embedded flow)."),
            request_id(&req),
        ),
    }
}

async fn redirect_flow<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<CallbackOutcome, Error> {
    // Finch Connect came back without a code (OAuth 2.0's error response): nothing to exchange,
    // even if a code came too.
    if let Some(error) = query_param(req, "error")? {
        return Err(callback::connect_ended(&error));
    }
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

    /// The app URL a GET callback answered with: its (reason, next), asserting the rest.
    async fn back_in_app(req: Request) -> (String, String) {
        let r = handle(&app(), req).await;
        assert_eq!(r.status().as_u16(), 302);
        let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert!(to.as_str().starts_with("http://app.test/connections"), "{to}");
        let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
        assert_eq!(q["outcome"], "error");
        assert!(!q.contains_key("code") && !q.contains_key("state"), "{to}");
        (q["reason"].clone(), q["next"].clone())
    }

    #[tokio::test]
    async fn every_failed_redirect_lands_back_in_the_app_with_a_reason() {
        let get = |q: &[(&str, &str)]| with_query(api_request(Method::GET, "/connect/callback", None, None), q);
        let restart = |r: &str| (r.to_owned(), "restart".to_owned());
        assert_eq!(back_in_app(get(&[])).await, restart("code_invalid"));
        assert_eq!(back_in_app(get(&[("code", "c-1")])).await, restart("state_invalid"));
        assert_eq!(back_in_app(get(&[("code", "c-1"), ("code", "c-2")])).await, restart("invalid_query"));
        assert_eq!(back_in_app(get(&[("code", "c-1"), ("state", "forged")])).await, restart("state_invalid"));
        assert_eq!(back_in_app(get(&[("error", "access_denied"), ("state", "s")])).await, restart("consent_denied"));
        let both = get(&[("error", "access_denied"), ("code", "c-1"), ("state", "s")]);
        assert_eq!(back_in_app(both).await, restart("consent_denied"));
        let odd = get(&[("error", "<script>"), ("error_description", "x\r\ny")]);
        assert_eq!(back_in_app(odd).await, restart("connect_failed"));
        let long = "c".repeat(10_000);
        assert_eq!(back_in_app(get(&[("code", &long), ("state", "s")])).await, restart("code_invalid"));
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
