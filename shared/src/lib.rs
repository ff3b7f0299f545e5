//! Perch's shared crate: everything the Lambda functions have in common.
//!
//! The functions are thin edges (parse the request, call one flow here, render the result);
//! the decisions live in this crate so they are tested once and read in one place. Its
//! modules form layers, each depending only on those listed before it (the architecture test,
//! `tests/tests/architecture.rs`, fails the build when one does not):
//!
//! 1. [`domain`]: identifiers, secrets, products, statuses, the HTTP-agnostic error; [`lazy`];
//! 2. [`config`]: typed settings from the environment;
//! 3. the ports and their records — [`store`] (narrow traits mirroring each function's IAM
//!    policy), [`crypto`] (token cipher, states, code hashes), [`secrets`] (the Finch secret,
//!    cached), [`events`] (status changes), [`queue`] (sync work) — and [`finch`], the Finch API
//!    client;
//! 4. [`app`]: the [`AppState`] every flow is handed: configuration and ports, generic over
//!    one implementation of each ([`app::Adapters`]);
//! 5. [`flows`]: sessions, the callback, re-authentication and disconnection, webhooks, the
//!    status sweep, key rotation — free of HTTP and of AWS SDK types;
//! 6. the adapters: [`aws`] (DynamoDB, KMS, Secrets Manager, EventBridge, SQS, and the one
//!    conversion of SDK errors: [`aws::Aws`]) and [`memory`] (the same ports in memory, for the
//!    fast tests: [`memory::Memory`]);
//! 7. [`http`]: the edge, the only module that knows HTTP;
//! 8. [`runtime`]: wiring — the [`AppState`] built on AWS — and telemetry.
//!
//! AWS SDK types appear only in [`aws`] and [`runtime`].

pub mod domain;
pub mod lazy;

pub mod config;

pub mod crypto;
pub mod events;
pub mod finch;
pub mod queue;
pub mod secrets;
pub mod store;

pub mod app;

pub mod flows;

pub mod aws;
pub mod memory;

pub mod http;

pub mod runtime;

pub use app::AppState;
pub use config::Config;
pub use domain::Error;
