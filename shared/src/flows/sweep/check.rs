//! One connection's check: decrypt, introspect (paced, retried), read the company when Perch
//! lacks its legal name or Finch said it changed, record if nothing newer landed.
//!
//! The company costs a second request, so it is asked only when it can tell something new:
//! the legal name is unknown (an assisted connection answers 202 until its first pull), a
//! `company.updated` or a new entity asked for it (`refresh_requested_at`), or the entities
//! Finch lists differ from the stored ones.

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::Pacer;
use crate::app::{Adapters, AppState};
use crate::crypto::TokenCipher;
use crate::domain::{AccessToken, ConnectionStatus, Error};
use crate::events::{ChangeSource, StatusChanged};
use crate::finch::types::Introspection;
use crate::finch::{FinchClient, backoff};
use crate::flows::budget::{Budget, Priority, Taken};
use crate::store::{ConnectionRecord, Employer, EntityRecord, Observation, SweepStore};

/// Where a check's Finch requests wait: the sweep's own evenly spaced slots, then — with
/// `SWEEP_SHARED_BUDGET` — Finch's windows shared with the sync workers ([`crate::flows::budget`]):
/// the egress IP's, and the company product's for a company read. Status checks are
/// first-priority callers. A budget that cannot be read (a DynamoDB outage) does not stop the
/// sweep: its own pacing still keeps it within its share.
pub(super) struct Gate<'a> {
    pub pacer: &'a Pacer,
    pub store: &'a dyn SweepStore,
    pub settings: &'a super::SweepSettings,
}

impl Gate<'_> {
    pub async fn acquire(&self, product: Option<&str>) {
        self.pacer.acquire().await;
        let windows = self.settings.shared_windows(product);
        if windows.is_empty() {
            return;
        }
        let budget = Budget::new(self.store);
        loop {
            let now = OffsetDateTime::now_utc();
            match budget.try_take(&windows, Priority::First, now).await {
                Ok(Taken::Yes) => return,
                Ok(Taken::WaitUntil(at)) => {
                    // The window is full (the sync workers took their share): every slot of
                    // this invocation waits for it to roll.
                    let wait = std::time::Duration::try_from(at - now).unwrap_or_default();
                    self.pacer.hold_off(wait.max(std::time::Duration::from_millis(50))).await;
                    self.pacer.acquire().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "Finch's shared budget not read; the sweep's own pacing holds");
                    return;
                }
            }
        }
    }
}

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
    gate: &Gate<'_>,
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
    let Some(mut observation) = observe(finch, gate, rec, &token, counters).await else { return Checked::Failed };
    if wants_company(rec, &observation) {
        read_company(finch, gate, rec, &token, counters, &mut observation).await;
    }
    record(app, store, rec, &observation).await
}

/// Whether the company is worth a request now (see the module docs).
fn wants_company(rec: &ConnectionRecord, obs: &Observation) -> bool {
    if obs.status != ConnectionStatus::Connected {
        return false; // Finch answers 202 (or 401) until it is.
    }
    let entities_changed = obs.entities.as_ref().is_some_and(|seen| {
        let ids = |es: &[EntityRecord]| es.iter().map(|e| (e.id.clone(), e.name.clone())).collect::<Vec<_>>();
        ids(seen) != ids(&rec.entities)
    });
    rec.employer.legal_name.is_none() || rec.refresh_requested_at.is_some() || entities_changed
}

/// `/employer/company`, once, paced; its legal name and id into the observation. A failure
/// leaves them as they were: the next check asks again.
async fn read_company(
    finch: &FinchClient,
    gate: &Gate<'_>,
    rec: &ConnectionRecord,
    token: &AccessToken,
    counters: &Counters,
    obs: &mut Observation,
) {
    gate.acquire(Some("company")).await;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    match finch.company(token).await {
        Ok(Some(c)) => {
            let employer = obs.employer.get_or_insert_with(Employer::default);
            employer.legal_name = c.value.legal_name.filter(|n| !n.trim().is_empty());
            if c.value.id.is_some() {
                employer.company_id = c.value.id;
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), "status check: company not read; asked again next time");
        }
    }
}

/// What an introspection says of the employer (the legal name comes from the company).
fn employer_of(i: &Introspection) -> Employer {
    Employer {
        company_id: i.company_id.clone(),
        legal_name: None,
        customer_name: i.customer_name.clone(),
        customer_email: i.customer_email.clone(),
        connection_type: i.connection_type.clone(),
        authentication_method: i.authentication_method(),
    }
}

/// `/introspect` until Finch answers or the retries are spent, paced: what Finch says of the
/// connection, or `None` (logged) when it would not say.
async fn observe(
    finch: &FinchClient,
    gate: &Gate<'_>,
    rec: &ConnectionRecord,
    token: &AccessToken,
    counters: &Counters,
) -> Option<Observation> {
    let mut attempt = 0;
    loop {
        gate.acquire(None).await;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        let e = match finch.introspect(token).await {
            Ok(i) => {
                let v = i.value;
                let employer = employer_of(&v);
                let entities = v.entities.map(|es| {
                    let seen = es
                        .into_iter()
                        .map(|e| EntityRecord {
                            id: e.id,
                            name: e.name,
                            source_id: e.source_id,
                            status: e.status,
                            observed_at: Some(now),
                            disconnected_at: None,
                        })
                        .collect();
                    rec.merged_entities(seen)
                });
                return Some(Observation {
                    status: v.connection_status.status,
                    status_message: v.connection_status.message,
                    last_successful_sync: v.connection_status.last_successful_sync,
                    products: Some(v.products),
                    entities,
                    employer: Some(employer),
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
                    entities: None,
                    employer: None,
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
        gate.pacer.hold_off(wait.unwrap_or_else(|| backoff(attempt))).await;
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
