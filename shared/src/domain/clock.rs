//! The time flows read: the system's, or — in tests — the system's moved by an offset the test
//! controls, so a link that must work for 30 days can be tried on day 29 without waiting.
//!
//! Only the decisions that depend on elapsed time read it (when a state expires, when an
//! observation was made, how long a disconnect's lease lasts); record-keeping stamps such as
//! `updated_at` use the system time in the adapters.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A clock: the system's, optionally shifted.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Seconds added to the system time; `None` in production (no shared state to read).
    offset: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { offset: None }
    }

    /// A clock a test moves with [`Clock::advance`]; clones share the offset.
    pub fn adjustable() -> Self {
        Self { offset: Some(Arc::new(AtomicI64::new(0))) }
    }

    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        match &self.offset {
            Some(o) => now + time::Duration::seconds(o.load(Ordering::Relaxed)),
            None => now,
        }
    }

    /// Moves an adjustable clock forward; a system clock cannot be moved (a no-op).
    pub fn advance(&self, by: time::Duration) {
        if let Some(o) = &self.offset {
            o.fetch_add(by.whole_seconds(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_for_every_clone_and_the_system_clock_never() {
        let c = Clock::adjustable();
        let seen_by_flow = c.clone();
        c.advance(time::Duration::days(2));
        assert!(seen_by_flow.now() - OffsetDateTime::now_utc() > time::Duration::hours(47));
        let s = Clock::system();
        s.advance(time::Duration::days(2));
        assert!(s.now() - OffsetDateTime::now_utc() < time::Duration::minutes(1));
    }
}
