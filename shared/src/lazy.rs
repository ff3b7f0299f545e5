//! Clients built on first use, or in init for the services a function is known to call.
//!
//! Building an AWS SDK client is most of a function's cold start: ~0.7 M instructions each
//! (the crate's endpoint partition table parsed and its regexes compiled, and an HTTPS
//! connector built to validate the configuration), against ~0.1 M for everything else Perch
//! does in init (BENCHMARKS.md). Every function used to build all five clients; a function
//! that never calls KMS should not pay for a KMS client. So the adapters hold each client as a
//! [`Lazy`]: nothing is built until used, and each `main.rs` builds in init exactly the
//! clients its handler calls (its `SERVICES`, see [`crate::runtime::Service`]), so none of
//! that cost lands on a first request either. A missing entry in that list costs time on the
//! first request, never correctness; a test checks the lists against the calls each function
//! makes.

use std::sync::{Arc, OnceLock};

/// A value built once, on first use; clones share it.
pub struct Lazy<T> {
    cell: Arc<OnceLock<T>>,
    make: Arc<dyn Fn() -> T + Send + Sync>,
}

impl<T> Lazy<T> {
    pub fn new(make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self { cell: Arc::new(OnceLock::new()), make: Arc::new(make) }
    }

    /// The value, built now if this is the first use.
    pub fn get(&self) -> &T {
        self.cell.get_or_init(|| (self.make)())
    }

    /// Whether it has been built.
    pub fn is_built(&self) -> bool {
        self.cell.get().is_some()
    }
}

impl<T> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Self { cell: Arc::clone(&self.cell), make: Arc::clone(&self.make) }
    }
}

impl<T> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy").field("built", &self.is_built()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn built_once_on_first_use_and_shared_by_clones() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let lazy = Lazy::new(move || counter.fetch_add(1, Ordering::SeqCst) + 41);
        let clone = lazy.clone();
        assert!(!lazy.is_built());
        assert_eq!(made.load(Ordering::SeqCst), 0, "nothing is built before use");
        assert_eq!(*clone.get(), 41);
        assert_eq!(*lazy.get(), 41);
        assert!(lazy.is_built());
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }
}
