//! What every flow is handed: the configuration and the ports, built once per container.
//!
//! The fields are traits, not AWS clients: [`crate::runtime`] fills them with the AWS adapters
//! ([`AppState::build`](crate::runtime)), the in-process tests with the memory ones
//! ([`AppState::in_memory`]). A flow sees the store only through its function's narrow trait
//! (see [`crate::store`]).

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::Cipher;
use crate::events::EventPublisher;
use crate::finch::FinchClient;
use crate::secrets::SecretCache;
use crate::store::Store;

/// Shared configuration and ports for one Lambda container (or one local server, or one test).
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub cipher: Arc<dyn Cipher>,
    pub secrets: SecretCache,
    pub finch: FinchClient,
    pub events: EventPublisher,
}

impl AppState {
    /// Assembles a state from its parts; the Finch client is built from the configuration.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        cipher: Arc<dyn Cipher>,
        secrets: SecretCache,
        events: EventPublisher,
    ) -> Self {
        let finch = FinchClient::new(config.finch_api_url.clone(), config.finch_timeout, config.finch_max_retries);
        Self { config, store, cipher, secrets, finch, events }
    }
}
