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
