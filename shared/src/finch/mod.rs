//! Finch: the typed API client and its bodies.

mod client;
pub mod types;

pub(crate) use client::backoff;
pub use client::{Data, FINCH_API_VERSION, Fetched, FinchClient, MAX_BATCH_IDS, MAX_DIRECTORY_PAGE, Traced};
