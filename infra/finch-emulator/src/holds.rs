//! Holds: a request to a held route waits at the gate until the test opens it. This is how a
//! test puts a Perch request exactly between two of its calls to Finch — a webhook landing
//! between a callback's `/introspect` and its save, a disconnect finishing while a
//! reauthentication session is being created — with no sleep and no timing to hope for.
//!
//! A fault `{"path": "/employer/company", "hold": "company", "times": 1}` holds the first
//! request to that route at the gate named `company`; the test awaits
//! [`Holds::arrived`], does what must happen meanwhile, then [`Holds::release`]s it.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// One named gate: how many requests reached it, and whether it is open.
#[derive(Clone)]
struct Gate {
    arrived: watch::Sender<u32>,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Self {
        Self { arrived: watch::channel(0).0, open: watch::channel(false).0 }
    }
}

/// The emulator's gates.
#[derive(Default)]
pub struct Holds {
    gates: Mutex<HashMap<String, Gate>>,
}

impl Holds {
    fn gate(&self, name: &str) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.entry(name.to_owned()).or_insert_with(Gate::new).clone()
    }

    /// A request reaches the gate and waits until it is open.
    pub(crate) async fn pass(&self, name: &str) {
        let gate = self.gate(name);
        gate.arrived.send_modify(|n| *n += 1);
        let mut open = gate.open.subscribe();
        // An error means the sender is gone, which the gate map never lets happen.
        let _ = open.wait_for(|o| *o).await;
    }

    /// Resolves once a request is waiting (or has waited) at the gate.
    pub async fn arrived(&self, name: &str) {
        let mut arrived = self.gate(name).arrived.subscribe();
        let _ = arrived.wait_for(|n| *n > 0).await;
    }

    /// Opens the gate: every request waiting there, and any later one, goes on.
    pub fn release(&self, name: &str) {
        self.gate(name).open.send_replace(true);
    }
}
