//! The HTTP edge: the only module that knows HTTP. API Gateway (HTTP API, payload v2)
//! requests in, responses out, and [`Error`](crate::domain::Error) mapped to statuses.
//!
//! Every anticipated failure becomes `Ok(response)` with an RFC 9457 problem body: a handler
//! `Err` would reach the client as API Gateway's opaque 502. Every response carries
//! `Cache-Control: no-store` — they describe a customer's payroll connections — and is JSON.
//!
//! The caller's customer comes from the JWT authorizer's claims, which API Gateway has already
//! verified; the claim name is configuration. Nothing in a body or a query can name a customer.

mod problem;
mod request;
mod response;
pub mod testing;

pub use problem::Problem;
pub use request::{
    MAX_BODY_BYTES, RequestSpan, customer_from_claims, json_body, path_param, query_param, request_id, request_span,
};
pub use response::{NextStep, error_response, failure_redirect, json_response, no_content, redirect_response};
