//! Perch's shared crate: everything the Lambda functions have in common.
//!
//! The functions are thin edges (parse the request, call one operation here, render the
//! result); the decisions live in this crate so they are tested once and read in one place:
//!
//! - [`config`]: typed configuration from the environment, validated at cold start;
//! - [`app`]: the clients, built once per container and borrowed by every invocation;
//! - [`secrets`]: the Finch credentials from Secrets Manager, cached with a TTL;
//! - [`crypto`]: access tokens encrypted under KMS, bound to their connection and customer;
//! - [`store`]: connections, Finch customer-id claims, states and code markers in DynamoDB;
//! - [`finch`]: the Finch API client, with Finch's retry rules and request-id logging;
//! - [`connect`]: the Connect flow itself;
//! - [`lifecycle`]: re-authentication and disconnection;
//! - [`rotation`]: moving tokens to a new KMS key, rotating the Finch secret;
//! - [`events`]: status-change events for the app (EventBridge);
//! - [`webhook`]: Finch webhooks, verified and applied;
//! - [`sweep`]: the paced, fanned-out `/introspect` status sweep;
//! - [`error`] and [`http`]: one error model, rendered as RFC 9457 problems at the edge;
//! - [`tls`]: the certificate authorities each HTTP client trusts (a cold-start decision).

pub mod app;
pub mod config;
pub mod connect;
pub mod crypto;
pub mod error;
pub mod events;
pub mod finch;
pub mod http;
pub mod lazy;
pub mod lifecycle;
pub mod rotation;
pub mod secrets;
pub mod state_token;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod tls;
pub mod types;
pub mod webhook;

pub use app::AppState;
pub use config::Config;
pub use error::Error;
