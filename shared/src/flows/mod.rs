//! The flows: what Perch does, free of HTTP and of AWS SDK types.
//!
//! Each flow takes the [`AppState`](crate::app::AppState) and reaches the store only through
//! its function's narrow trait (see [`crate::store`]):
//!
//! - [`session`]: new Connect sessions, the Finch `customer_id` scheme, the listing;
//! - [`callback`]: the end of a Connect flow, as named steps;
//! - [`lifecycle`]: re-authentication and disconnection;
//! - [`webhook`]: Finch webhooks, verified and applied;
//! - [`sweep`]: the paced, fanned-out `/introspect` status sweep;
//! - [`rotation`]: moving tokens to a new KMS key;
//! - [`operators`]: an operator's listing, view and disconnects (`perch-admin`);
//! - [`budget`]: one Finch rate budget shared by every invocation;
//! - [`sync`]: the employer's data, synced into Perch's store; the feed and the joined view;
//! - [`people`]: one person across a customer's connections: the index and its views.

pub mod budget;
pub mod callback;
pub mod lifecycle;
pub mod operators;
pub mod people;
pub mod rotation;
pub mod session;
pub mod sweep;
pub mod sync;
pub mod webhook;
