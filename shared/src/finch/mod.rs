//! Finch: the typed API client and its bodies.

mod client;
pub mod stream;
pub mod types;

pub(crate) use client::backoff;
pub use client::{
    Data, FINCH_API_VERSION, Fetched, FinchClient, MAX_BATCH_IDS, MAX_DIRECTORY_PAGE, MAX_PAYMENTS_PER_REQUEST,
    MAX_STATEMENTS_PER_PAYMENT, Traced,
};
