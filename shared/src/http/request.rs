//! Reading a request: the caller's customer, bodies, query and path parameters.

use lambda_http::http::header;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde::de::DeserializeOwned;

use crate::domain::{CustomerId, Error};

/// Largest JSON body any route accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The API Gateway request id, echoed in problems so support can find the log line.
pub fn request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
}

/// The span every log line of one request is written in: the request id a problem body names
/// (API Gateway's), and the connection concerned once a handler knows it
/// ([`RequestSpan::record_connection`]). Support goes from an error body to every line of its
/// request.
pub struct RequestSpan(tracing::Span);

impl RequestSpan {
    /// Runs a request's handling inside the span.
    pub async fn run<F: std::future::Future>(self, handling: F) -> F::Output {
        tracing::Instrument::instrument(handling, self.0).await
    }

    /// Names the connection a request concerns, in the current request's span.
    pub fn record_connection(id: &str) {
        tracing::Span::current().record("connection_id", id);
    }
}

/// The span of one request (see [`RequestSpan`]).
pub fn request_span(req: &Request) -> RequestSpan {
    let id = request_id(req);
    RequestSpan(tracing::info_span!(
        "request",
        request_id = id.as_deref().unwrap_or("-"),
        connection_id = tracing::field::Empty
    ))
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
        // The media type itself, parameters (`; charset=utf-8`) aside: `application/jsonx` is
        // not JSON. A header that is not ASCII cannot be `application/json` either.
        let ct = ct.to_str().unwrap_or_default();
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(Error::invalid("unsupported_media_type", "Send the body as application/json."));
        }
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("invalid_body", format!("The JSON body is invalid: {e}")))
}

/// One query-string parameter, refused when repeated (API Gateway joins repeats with commas).
pub fn query_param(req: &Request, name: &str) -> Result<Option<String>, Error> {
    let params = req.query_string_parameters_ref();
    // No query string at all holds none of this parameter.
    let all: Vec<&str> = params.and_then(|p| p.all(name)).unwrap_or_default();
    match all.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).to_owned())),
        _ => Err(Error::invalid("invalid_query", format!("`{name}` is given more than once."))),
    }
}

/// A path parameter the route template names (`{id}`); absent is a 404 for `what`.
pub fn path_param<'a>(req: &'a Request, name: &str, what: &'static str) -> Result<&'a str, Error> {
    req.path_parameters_ref().and_then(|p| p.first(name)).ok_or(Error::NotFound(what))
}
