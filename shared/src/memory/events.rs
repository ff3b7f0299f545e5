//! The small ports: a recorded event sink, a fixed secret, a recorded work queue.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::Error;
use crate::events::EventSink;
use crate::flows::sweep::{SegmentWork, WorkQueue};
use crate::secrets::SecretSource;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps every event's detail, in order.
#[derive(Default)]
pub struct RecordingSink {
    events: Mutex<Vec<serde_json::Value>>,
}

impl RecordingSink {
    /// The details published so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        lock(&self.events).clone()
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn put(&self, detail: &str, _resource: &str) -> Result<(), Error> {
        let v = serde_json::from_str(detail).map_err(|e| Error::internal_from("event detail is not JSON", e))?;
        lock(&self.events).push(v);
        Ok(())
    }
}

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

/// Keeps every work item sent, in order.
#[derive(Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<SegmentWork>>,
}

impl MemoryQueue {
    pub fn sent(&self) -> Vec<SegmentWork> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    async fn send(&self, work: &[SegmentWork]) -> Result<(), Error> {
        lock(&self.sent).extend_from_slice(work);
        Ok(())
    }
}
