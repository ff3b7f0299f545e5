//! Requests shaped as API Gateway (HTTP API, payload v2) delivers them, for the functions'
//! handler tests: path and query parameters set, and the JWT authorizer's claims in the request
//! context.

use std::collections::HashMap;

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::http::Method;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};

/// A request to `path` with a JSON `body` (empty when `None`) from `customer` (the
/// `customer_id` claim; no authorizer context at all when `None`).
pub fn api_request(method: Method, path: &str, body: Option<&str>, customer: Option<&str>) -> Request {
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.request_id = Some("test-request".into());
    ctx.http.method = method.clone();
    if let Some(c) = customer {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = HashMap::from([("customer_id".to_owned(), c.to_owned())]);
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        ctx.authorizer = Some(authorizer);
    }
    let body = body.map_or(Body::Empty, |b| Body::Text(b.to_owned()));
    let mut req = Request::new(body);
    *req.method_mut() = method;
    if let Ok(uri) = path.parse() {
        *req.uri_mut() = uri;
    }
    req.headers_mut().insert("content-type", lambda_http::http::HeaderValue::from_static("application/json"));
    req.with_request_context(RequestContext::ApiGatewayV2(ctx))
}

/// The same request with path parameters (`{"id": …}`).
pub fn with_path(req: Request, params: &[(&str, &str)]) -> Request {
    let params: HashMap<String, String> = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    req.with_path_parameters(params)
}

/// The same request with query parameters.
pub fn with_query(req: Request, params: &[(&str, &str)]) -> Request {
    let mut q: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in params {
        q.entry((*k).to_owned()).or_default().push((*v).to_owned());
    }
    req.with_query_string_parameters(q)
}

/// A response body as JSON (`null` when empty or not JSON).
pub fn json(resp: &lambda_http::Response<Body>) -> serde_json::Value {
    serde_json::from_slice(resp.body().as_ref()).unwrap_or(serde_json::Value::Null)
}
