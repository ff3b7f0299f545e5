//! Wiring: the [`AppState`](crate::app::AppState) of a Lambda container built on AWS, and
//! logging.
//!
//! Every `main.rs` is `telemetry::init()`, then `AppState::build(Config::from_env()?,
//! SERVICES)`, then the runtime's loop over the function's handler.

pub mod telemetry;
mod wiring;

pub use wiring::Service;
