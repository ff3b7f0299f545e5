//! What every flow is handed: the configuration and the ports, built once per container.
//!
//! The ports are type parameters, not AWS clients: [`Adapters`] names one implementation of
//! each. [`crate::runtime`] builds the state on the AWS adapters ([`crate::aws::Aws`]), the
//! in-process tests on the memory ones ([`crate::memory::Memory`]). A flow sees the store only
//! through its function's narrow trait (see [`crate::store`]).
//!
//! **Why generic, not `dyn`.** A `dyn Store` would hold a table of every store operation, so
//! every function's binary would link every DynamoDB call (and a `dyn` cipher, secret source
//! and event sink, KMS, Secrets Manager and EventBridge) whether it makes them or not: +0.5 to
//! +1.2 MB per binary, measured. With the adapters as type parameters each binary keeps only
//! the calls its flows make; a flow's narrow `&dyn CallbackStore` view costs one table of
//! exactly those.

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::Cipher;
use crate::crypto::records::DataKeyCache;

/// Data keys a container keeps unwrapped at most (a few kilobytes).
const DATA_KEYS_HELD: usize = 256;
use crate::domain::Clock;
use crate::events::{EventPublisher, EventSink};
use crate::finch::FinchClient;
use crate::queue::SyncQueue;
use crate::secrets::{SecretCache, SecretSource};
use crate::store::Store;

/// One implementation of each port.
pub trait Adapters: Send + Sync + 'static {
    type Store: Store + 'static;
    type Cipher: Cipher + 'static;
    type Secrets: SecretSource + 'static;
    type Events: EventSink + 'static;
    /// The sync queue (SQS deployed).
    type Queue: SyncQueue + 'static;
}

/// Shared configuration and ports for one Lambda container (or one local server, or one test).
pub struct AppState<A: Adapters> {
    pub config: Config,
    pub store: Arc<A::Store>,
    pub cipher: Arc<A::Cipher>,
    pub secrets: SecretCache<A::Secrets>,
    pub finch: FinchClient,
    pub events: EventPublisher<A::Events>,
    /// Where sync work goes (`SYNC_QUEUE_URL`); `None` where the function starts no sync.
    pub sync_queue: Option<Arc<A::Queue>>,
    /// The time flows decide by (the system's; tests may move it).
    pub clock: Clock,
    /// Connections' data keys, unwrapped, for the app's reads (see [`DataKeyCache`]).
    pub data_keys: DataKeyCache,
}

impl<A: Adapters> AppState<A> {
    /// Assembles a state from its parts; the Finch client is built from the configuration.
    pub fn new(
        config: Config,
        store: Arc<A::Store>,
        cipher: Arc<A::Cipher>,
        secrets: SecretCache<A::Secrets>,
        events: EventPublisher<A::Events>,
    ) -> Self {
        let finch = FinchClient::new(config.finch_api_url.clone(), config.finch_timeout, config.finch_max_retries);
        let data_keys = DataKeyCache::new(config.secret_cache_ttl, DATA_KEYS_HELD);
        Self { config, store, cipher, secrets, finch, events, sync_queue: None, clock: Clock::system(), data_keys }
    }
}
