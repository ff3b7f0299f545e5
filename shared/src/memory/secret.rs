//! The Finch secret, held in memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use secrecy::SecretString;

use super::lock;
use crate::domain::Error;
use crate::secrets::SecretSource;

/// A secret's JSON held in memory; replaceable (a rotation), and counting its reads.
pub struct StaticSecret {
    json: Mutex<String>,
    fetches: AtomicUsize,
}

impl StaticSecret {
    pub fn new(json: impl Into<String>) -> Self {
        Self { json: Mutex::new(json.into()), fetches: AtomicUsize::new(0) }
    }

    /// Replaces the value (what rotating the secret does).
    pub fn set(&self, json: impl Into<String>) {
        *lock(&self.json) = json.into();
    }

    /// How often the value was read.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSource for StaticSecret {
    async fn fetch(&self) -> Result<SecretString, Error> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(SecretString::from(lock(&self.json).clone()))
    }
}
