//! The Finch credentials, read from Secrets Manager once per container and cached.
//!
//! One JSON secret holds `{client_id, client_secret, webhook_secret, state_key}`. It is not
//! read at init — init stays free of network calls so cold starts are cheap — but on the first
//! request that needs it, then kept for `SECRET_CACHE_TTL_SECONDS`. Any 401 from Finch on a
//! client-authenticated call (a rotated client secret: `invalid_client`, or any other refusal
//! of our credentials) invalidates the cache, so the next request reads the current value
//! without a redeploy. Concurrent first requests share one fetch.
//!
//! Where the JSON comes from is the [`SecretSource`] port: Secrets Manager in production
//! ([`crate::aws::secrets_manager`]), a fixed value in the in-process tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::domain::Error;

/// Where the secret's JSON is read from.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's current JSON text.
    async fn fetch(&self) -> Result<SecretString, Error>;
}

/// The decoded secret. Every secret field redacts itself in `Debug`.
#[derive(Debug)]
pub struct FinchSecrets {
    pub client_id: String,
    pub client_secret: SecretString,
    /// Base64 HMAC key Finch signs webhooks with (issue #3); optional until webhooks are used.
    pub webhook_secret: Option<SecretString>,
    /// Key that signs Connect `state` values (≥ 32 bytes once decoded).
    pub state_key: SecretBox<Vec<u8>>,
}

#[derive(Deserialize)]
struct RawSecrets {
    client_id: String,
    client_secret: SecretString,
    #[serde(default)]
    webhook_secret: Option<SecretString>,
    state_key: SecretString,
}

impl FinchSecrets {
    /// Parses the secret's JSON. Errors never quote the value.
    pub fn parse(json: &str) -> Result<Self, Error> {
        let raw: RawSecrets = serde_json::from_str(json).map_err(|e| {
            Error::internal(format!(
                "Finch secret is not the expected JSON object (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let key = STANDARD
            .decode(raw.state_key.expose_secret().trim())
            .map_err(|_| Error::internal("Finch secret: state_key is not standard base64"))?;
        if key.len() < 32 {
            return Err(Error::internal("Finch secret: state_key must decode to at least 32 bytes"));
        }
        if raw.client_id.trim().is_empty() || raw.client_secret.expose_secret().is_empty() {
            return Err(Error::internal("Finch secret: client_id and client_secret must be set"));
        }
        Ok(Self {
            client_id: raw.client_id,
            client_secret: raw.client_secret,
            webhook_secret: raw.webhook_secret,
            state_key: SecretBox::new(Box::new(key)),
        })
    }
}

/// A TTL cache in front of a [`SecretSource`].
pub struct SecretCache<S> {
    source: Arc<S>,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<FinchSecrets>)>>,
}

impl<S: SecretSource> SecretCache<S> {
    pub fn new(source: Arc<S>, ttl: Duration) -> Self {
        Self { source, ttl, cached: Mutex::new(None) }
    }

    /// The current secrets, fetched when absent or older than the TTL.
    pub async fn get(&self) -> Result<Arc<FinchSecrets>, Error> {
        // Holding the lock across the fetch makes concurrent cold requests share one call.
        let mut guard = self.cached.lock().await;
        if let Some((at, s)) = guard.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(s));
        }
        let fresh = Arc::new(FinchSecrets::parse(self.source.fetch().await?.expose_secret())?);
        tracing::info!("Finch secret loaded");
        *guard = Some((Instant::now(), Arc::clone(&fresh)));
        Ok(fresh)
    }

    /// Drops the cached value, e.g. after Finch refused our client credentials.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Drops the cached value if `e` says Finch refused our client credentials (a 401 on a
    /// client-authenticated call), and hands `e` back.
    pub async fn forget_on_auth_failure(&self, e: Error) -> Error {
        if matches!(&e, Error::Finch(f) if f.status == 401) {
            self.invalidate().await;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts() {
        let key = STANDARD.encode([7u8; 32]);
        let json = format!(r#"{{"client_id":"cid","client_secret":"very-secret","state_key":"{key}"}}"#);
        let s = FinchSecrets::parse(&json).unwrap();
        assert_eq!(s.state_key.expose_secret().len(), 32);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret"));
        assert!(!dbg.contains(&key));
    }

    #[test]
    fn accepts_the_state_key_the_template_generates() {
        // 48 alphanumeric characters (Secrets Manager, ExcludePunctuation) are base64 for 36 bytes.
        let key = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYzA1bC2dE3fG4hJ5k";
        assert_eq!(key.len(), 48);
        let json = format!(r#"{{"client_id":"cid","client_secret":"x","state_key":"{key}"}}"#);
        assert_eq!(FinchSecrets::parse(&json).unwrap().state_key.expose_secret().len(), 36);
    }

    #[test]
    fn refuses_short_state_key_without_quoting_it() {
        let json = r#"{"client_id":"cid","client_secret":"s3cr3t","state_key":"c2hvcnQ="}"#;
        let e = FinchSecrets::parse(json).unwrap_err();
        assert!(e.chain().contains("32 bytes"));
        assert!(!e.chain().contains("s3cr3t"));
        let e = FinchSecrets::parse(r#"{"client_id":"cid","client_secret":"s3cr3t"}"#).unwrap_err();
        assert!(!e.chain().contains("s3cr3t"));
    }
}
