//! The sweep's work queue, recorded instead of sent.

use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::Error;
use crate::flows::sweep::{SegmentWork, WorkQueue};

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

/// The sync queue, recorded instead of sent: each message with its delay.
#[derive(Default)]
pub struct MemorySyncQueue {
    sent: Mutex<Vec<(crate::queue::SyncWork, std::time::Duration)>>,
}

impl MemorySyncQueue {
    pub fn sent(&self) -> Vec<(crate::queue::SyncWork, std::time::Duration)> {
        lock(&self.sent).clone()
    }

    /// Takes every message sent so far (a test's worker consuming the queue).
    pub fn drain(&self) -> Vec<(crate::queue::SyncWork, std::time::Duration)> {
        std::mem::take(&mut *lock(&self.sent))
    }
}

#[async_trait]
impl crate::queue::SyncQueue for MemorySyncQueue {
    async fn send(&self, work: &[crate::queue::SyncWork], delay: std::time::Duration) -> Result<(), Error> {
        lock(&self.sent).extend(work.iter().map(|w| (w.clone(), delay)));
        Ok(())
    }
}
