//! Finch: the typed API client and its bodies.

mod client;
pub mod types;

pub use client::{FINCH_API_VERSION, FinchClient, Traced};
