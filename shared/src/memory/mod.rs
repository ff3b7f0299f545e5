//! The in-memory adapters: every port of the flows without AWS, for the fast in-process tests
//! (`tests/tests/flows.rs`: every branch in milliseconds) and nothing in production.
//!
//! They keep the same conditions as the AWS adapters — versions, expiry, ownership, single
//! use — because the in-process tests are only worth what the adapters' fidelity is; the
//! stack tests run the same flows on moto and DynamoDB Local to hold the real path to it.
//! [`MemoryStore::fail_next`] makes an operation fail like a busy AWS service would, for the
//! error branches.

mod cipher;
mod data;
mod events;
mod people;
mod queue;
mod secret;
mod store;

pub use cipher::MemoryCipher;
pub use events::RecordingSink;
pub use queue::{MemoryQueue, MemorySyncQueue};
pub use secret::StaticSecret;
pub use store::MemoryStore;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::app::{Adapters, AppState};
use crate::config::Config;
use crate::domain::Error;
use crate::events::EventPublisher;
use crate::secrets::SecretCache;

/// A test configuration for a state on memory adapters whose Finch is at `finch_api_url` (the
/// table, key and secret names are the memory adapters' own; no Finch retries).
pub fn sample_config(finch_api_url: &str) -> Result<Config, crate::config::ConfigError> {
    Config::from_lookup(|k| {
        let v = match k {
            "TABLE_NAME" | "FINCH_SECRET_ID" => "memory",
            "KMS_KEY_ID" => "memory-key",
            "FINCH_API_URL" => finch_api_url,
            "FINCH_REDIRECT_URI" => "http://perch.test/connect/callback",
            "APP_RETURN_URL" => "http://app.test/connections",
            "FINCH_TIMEOUT_MS" => "2000",
            // Tests meet failures at once, without Finch's backoff.
            "FINCH_MAX_RETRIES" => "0",
            _ => return None,
        };
        Some(v.to_owned())
    })
}

/// A Finch secret's JSON with these client credentials and fresh random state and webhook keys.
pub fn sample_secret(client_id: &str, client_secret: &str) -> Result<String, Error> {
    let key = || -> Result<String, Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        Ok(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k))
    };
    Ok(serde_json::json!({
        "client_id": client_id, "client_secret": client_secret,
        "state_key": key()?, "webhook_secret": key()?,
    })
    .to_string())
}

/// The memory adapters, as one [`Adapters`].
pub struct Memory;

impl Adapters for Memory {
    type Store = MemoryStore;
    type Cipher = MemoryCipher;
    type Secrets = StaticSecret;
    type Events = RecordingSink;
    type Queue = MemorySyncQueue;
}

/// The memory adapters behind an [`AppState::in_memory`], for a test to arrange and inspect.
#[derive(Clone)]
pub struct Parts {
    pub store: Arc<MemoryStore>,
    pub cipher: Arc<MemoryCipher>,
    pub secret: Arc<StaticSecret>,
    pub events: Arc<RecordingSink>,
    /// The sync queue the state sends to (the test plays the worker).
    pub sync_queue: Arc<MemorySyncQueue>,
}

impl AppState<Memory> {
    /// A state on the memory adapters, its Finch secret `secret_json`; Finch is wherever
    /// `config.finch_api_url` points (the emulator, in process).
    pub fn in_memory(config: Config, secret_json: impl Into<String>) -> Result<(Self, Parts), Error> {
        let a = Parts {
            store: Arc::new(MemoryStore::new()),
            cipher: Arc::new(MemoryCipher::new(config.kms_key_id.clone())?),
            secret: Arc::new(StaticSecret::new(secret_json)),
            events: Arc::new(RecordingSink::default()),
            sync_queue: Arc::new(MemorySyncQueue::default()),
        };
        let secrets = SecretCache::new(a.secret.clone(), config.secret_cache_ttl);
        let mut app = AppState::new(
            config,
            a.store.clone(),
            a.cipher.clone(),
            secrets,
            EventPublisher::new(Some(a.events.clone())),
        );
        app.sync_queue = Some(a.sync_queue.clone());
        Ok((app, a))
    }
}

/// A lock whose holder panicked is still good for a test double: its data is not half-written
/// by any code path here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
