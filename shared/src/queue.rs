//! The sync queue: the port through which a run is asked for ([`SyncQueue`]) and the message
//! that asks ([`SyncWork`]). Sent by the callback, webhooks, the app's `POST …/sync`, disconnect
//! (a purge) and the worker itself (continuations); consumed by the sync worker
//! ([`crate::flows::sync`]). SQS deployed ([`crate::aws::sqs`]), memory in tests.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{ConnectionId, EntityId, Error};

/// Why a run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A connection was made or re-authenticated.
    Connected,
    /// The schedule found it due.
    Scheduled,
    /// A Finch data webhook named it.
    Webhook,
    /// The app asked (`POST /connections/{id}/sync`).
    Requested,
    /// The rest of a run the deadline cut, or one a 429 paused.
    Resume,
    /// The connection was disconnected: delete what is left of its data.
    Purge,
    /// The customer's person index has changes of this connection to take in (its indexer was
    /// busy with another connection, or ran out of time).
    Index,
}

/// One message on the sync queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWork {
    pub connection_id: ConnectionId,
    pub trigger: Trigger,
    /// The entities to sync; every live one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<EntityId>>,
    /// A continuation's run: it holds the connection's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Payments a webhook said changed (`payment.*`, `pay_statement.*`): their statements are
    /// read again, whatever their pay date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Vec<String>>,
}

impl SyncWork {
    pub fn new(connection_id: ConnectionId, trigger: Trigger) -> Self {
        Self { connection_id, trigger, entities: None, run_id: None, payments: None }
    }
}

/// Where sync work goes: SQS deployed, memory in tests.
#[async_trait]
pub trait SyncQueue: Send + Sync {
    /// Sends `work`, delivered after `delay` (SQS allows up to 15 minutes).
    async fn send(&self, work: &[SyncWork], delay: Duration) -> Result<(), Error>;
}
