//! Pacing: evenly spaced request slots, so no rolling window of Finch's is ever exceeded.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Evenly spaced request slots: no bursts, so no rolling window is ever exceeded.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Self { interval, next: Mutex::new(Instant::now()) }
    }

    /// Waits for the next free slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// Pushes every future slot back (Finch asked us to wait).
    pub async fn hold_off(&self, wait: Duration) {
        let mut next = self.next.lock().await;
        *next = (*next).max(Instant::now() + wait);
    }
}
