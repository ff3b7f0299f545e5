//! Finch: the typed API client and its bodies.

mod client;
pub mod types;

pub(crate) use client::backoff;
pub use client::{FINCH_API_VERSION, FinchClient, Traced};
