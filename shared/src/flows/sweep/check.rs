//! One connection's check: decrypt, introspect (paced, retried), record if nothing newer landed.

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::Pacer;
use crate::app::{Adapters, AppState};
use crate::crypto::TokenCipher;
use crate::domain::{AccessToken, ConnectionStatus, Error};
use crate::events::{ChangeSource, StatusChanged};
use crate::finch::{FinchClient, backoff};
use crate::store::{ConnectionRecord, Observation, SweepStore};

/// Retries per connection after the first attempt.
const MAX_RETRIES: u32 = 3;

/// What one check came to.
pub(super) enum Checked {
    Written {
        changed: bool,
    },
    /// A newer change (webhook, reauthentication, disconnect) landed first; dropped.
    Superseded,
    Failed,
}

/// Requests made and 429s met, across the checks of one segment run.
#[derive(Default)]
pub(super) struct Counters {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// Checks one connection: decrypt, introspect (paced, retried), conditional write.
pub(super) async fn check_one<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SweepStore,
    finch: &FinchClient,
    pacer: &Pacer,
    rec: &ConnectionRecord,
    counters: &Counters,
) -> Checked {
    // Scanned with a token; a disconnect that finished since has taken it away.
    let Some(ciphertext) = &rec.token else { return Checked::Superseded };
    let token = match app.cipher.decrypt(ciphertext, &rec.connection_id, &rec.customer).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "status check: token did not decrypt");
            return Checked::Failed;
        }
    };
    let Some(observation) = observe(finch, pacer, rec, &token, counters).await else { return Checked::Failed };
    record(app, store, rec, &observation).await
}

/// `/introspect` until Finch answers or the retries are spent, paced: what Finch says of the
/// connection, or `None` (logged) when it would not say.
async fn observe(
    finch: &FinchClient,
    pacer: &Pacer,
    rec: &ConnectionRecord,
    token: &AccessToken,
    counters: &Counters,
) -> Option<Observation> {
    let mut attempt = 0;
    loop {
        pacer.acquire().await;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        let e = match finch.introspect(token).await {
            Ok(i) => {
                let v = i.value;
                return Some(Observation {
                    status: v.connection_status.status,
                    status_message: v.connection_status.message,
                    last_successful_sync: v.connection_status.last_successful_sync,
                    products: Some(v.products),
                    entity_ids: v.entities.map(|es| es.into_iter().map(|e| e.id).collect()),
                    request_id: i.request_id,
                    observed_at: now,
                });
            }
            // 401 reauthenticate_user is Finch's other way of saying `reauth`; any other 401
            // means the token was revoked outside Perch (a disconnect at Finch).
            Err(Error::Finch(e)) if e.status == 401 => {
                let status = if e.needs_reauth() { ConnectionStatus::Reauth } else { ConnectionStatus::Disconnected };
                return Some(Observation {
                    status,
                    status_message: e.message.clone(),
                    last_successful_sync: rec.last_successful_sync.clone(),
                    products: None,
                    entity_ids: None,
                    request_id: e.request_id.clone(),
                    observed_at: now,
                });
            }
            Err(e) => e,
        };
        let (retryable, wait) = match &e {
            Error::Finch(f) => (f.is_retryable(), f.retry_after),
            Error::FinchTransport { .. } => (true, None),
            _ => (false, None),
        };
        if matches!(&e, Error::Finch(f) if f.status == 429) {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        if !retryable || attempt >= MAX_RETRIES {
            tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), attempts = attempt + 1, "status check failed");
            return None;
        }
        pacer.hold_off(wait.unwrap_or_else(|| backoff(attempt))).await;
        attempt += 1;
    }
}

/// Writes the observation at the version the connection was read at, and announces a change.
async fn record<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SweepStore,
    rec: &ConnectionRecord,
    observation: &Observation,
) -> Checked {
    let changed = rec.status != observation.status;
    match store.record_check(&rec.connection_id, rec.version, observation).await {
        Ok(true) => {
            if changed {
                let previous = rec.status.finch().cloned();
                let change = StatusChanged::of(
                    rec,
                    previous,
                    observation.status.clone(),
                    ChangeSource::StatusCheck,
                    observation.observed_at,
                );
                app.events.publish(&change).await;
            }
            Checked::Written { changed }
        }
        Ok(false) => Checked::Superseded,
        Err(e) => {
            tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "status check not recorded");
            Checked::Failed
        }
    }
}
