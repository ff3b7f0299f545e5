//! The HTTP edge: reading API Gateway (HTTP API, payload v2) requests and writing responses.
//!
//! Every anticipated failure becomes `Ok(response)` with an RFC 9457 problem body: a handler
//! `Err` would reach the client as API Gateway's opaque 502. Every response carries
//! `Cache-Control: no-store` — they describe a customer's payroll connections — and is JSON.
//!
//! The caller's customer comes from the JWT authorizer's claims, which API Gateway has already
//! verified; the claim name is configuration. Nothing in a body or a query can name a customer.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::types::CustomerId;

/// Largest JSON body any route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// An RFC 9457 problem: the external half of an [`Error`].
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:perch:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The stable machine-readable code (also the last segment of `type`).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(status: u16, code: &'static str, title: &'static str, detail: String) -> Self {
        Self { type_uri: format!("urn:perch:problem:{code}"), title, status, detail, code, request_id: None }
    }
}

/// The API Gateway request id, echoed in problems so support can find the log line.
pub fn request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
}

/// Logs the internal message and renders the external one.
pub fn error_response(err: &Error, request_id: Option<String>) -> Response<Body> {
    let mut problem = err.problem();
    problem.request_id = request_id;
    if problem.status >= 500 {
        tracing::error!(status = problem.status, code = problem.code, error = %err.chain(), "request failed");
    } else {
        tracing::warn!(status = problem.status, code = problem.code, error = %err.chain(), "request refused");
    }
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut resp = base_response(problem.status, body, "application/problem+json");
    if problem.code == "finch_rate_limited" || problem.code == "service_unavailable" {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// A JSON success response.
pub fn json_response<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => base_response(status, body, "application/json"),
        Err(e) => error_response(&Error::internal_from("serialising a response", e), None),
    }
}

/// A 204 with no body.
pub fn no_content() -> Response<Body> {
    base_response(204, Vec::new(), "application/json")
}

/// A 302 to `location` (which must never carry a secret).
pub fn redirect_response(location: &str) -> Response<Body> {
    let mut resp = base_response(302, Vec::new(), "text/plain");
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn base_response(status: u16, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(if body.is_empty() { Body::Empty } else { Body::Binary(body) });
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The callback URL carries a code and a state; no page we return may leak it onward.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// The caller's customer, from the verified JWT claims only.
pub fn customer_from_claims(req: &Request, claim: &str) -> Result<CustomerId, Error> {
    let claims = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
        }
        _ => None,
    };
    let value =
        claims.and_then(|c| c.get(claim)).ok_or(Error::Unauthenticated("The token carries no customer claim."))?;
    CustomerId::parse(value.as_str())
        .map_err(|_| Error::Unauthenticated("The token's customer claim is not a valid customer id."))
}

/// Parses a JSON body of at most [`MAX_BODY_BYTES`]. An empty body parses as `{}`, so that
/// requests whose fields are all optional need no body at all.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, Error> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(Error::invalid("unsupported_media_type", "Send the body as application/json."));
        }
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("invalid_body", format!("The JSON body is invalid: {e}")))
}

/// One query-string parameter, refused when repeated (API Gateway joins repeats with commas).
pub fn query_param(req: &Request, name: &str) -> Result<Option<String>, Error> {
    let params = req.query_string_parameters_ref();
    let all: Vec<&str> = params.and_then(|p| p.all(name)).unwrap_or_default();
    match all.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).to_owned())),
        _ => Err(Error::invalid("invalid_query", format!("`{name}` is given more than once."))),
    }
}
