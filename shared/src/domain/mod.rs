//! The bottom layer: identifiers, secrets, products, statuses, sync timing and the error model.
//!
//! Nothing here knows HTTP, an AWS SDK or a flow; everything above depends on it.

pub mod clock;
pub mod error;
pub mod ids;
pub mod people;
pub mod secret;
pub mod session;
pub mod status;
pub mod sync;

pub use clock::Clock;
pub use error::{BoxError, Error, FinchError};
pub use ids::{
    CodeHash, ConnectionId, CustomerId, EntityId, EventId, FinchCustomerId, InvalidId, PersonId, SessionId, StateId,
};
pub use secret::{AccessToken, AuthorizationCode};
pub use session::{AuthMethod, DEFAULT_MINUTES_TO_EXPIRE, FlowMode, MAX_MINUTES_TO_EXPIRE, Product, SandboxMode};
pub use status::{ConnectionState, ConnectionStatus};
