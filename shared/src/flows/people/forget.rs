//! Forgetting one person: an operator's answer to an erasure request (`perch-admin people
//! forget`).
//!
//! For each source of the person, under the connection's run lease (so no sync writes
//! meanwhile): the individual is marked forgotten first — no later sync stores anything of them
//! again for this connection, however long the employer keeps them on its payroll —, then their
//! directory entry, individual, employment and every pay statement are removed, each with its
//! feed entry (the app's feed tells it to delete its copy). Then the person leaves the index,
//! with the keys only they had. What was removed is reported per source and kind; a source whose
//! connection a run holds is reported busy, and the command run again finishes it.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::index::{Unindexed, unindex_person};
use crate::app::{Adapters, AppState};
use crate::domain::people::SourceRef;
use crate::domain::sync::{ChangeOp, RecordKind, payment_id_of};
use crate::domain::{CustomerId, Error, PersonId};
use crate::store::SyncWorkerStore;
use crate::store::data::{Applied, Lease, MAX_CHANGES_PER_WRITE, RecordChange};

/// What happened at one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOutcome {
    /// Its records are removed and it is marked forgotten.
    Removed,
    /// The connection is disconnected: its data is being deleted already.
    ConnectionGone,
    /// A sync holds the connection now: run the command again.
    Busy,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceForgotten {
    #[serde(flatten)]
    pub source: SourceRef,
    pub outcome: SourceOutcome,
    /// Records removed, by kind.
    pub removed: BTreeMap<&'static str, u64>,
}

/// The report of `perch-admin people forget`.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    pub customer_id: CustomerId,
    pub person_id: PersonId,
    pub sources: Vec<SourceForgotten>,
    /// What left the person index (`null` while another indexer held it).
    pub index: Option<Unindexed>,
    /// Everything was done (else run the command again).
    pub complete: bool,
}

fn run_id() -> Result<String, Error> {
    Ok(format!("forget-{}", crate::crypto::random_hex::<8>()?))
}

/// Forgets one of `customer`'s people everywhere Perch holds them.
pub async fn forget_person<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_person: &str,
) -> Result<Forgotten, Error> {
    let store: &dyn SyncWorkerStore = app.store.as_ref();
    let person_id = PersonId::parse(raw_person).map_err(|_| Error::NotFound("person"))?;
    let Some(person) = store.persons(customer, std::slice::from_ref(&person_id)).await?.into_iter().next() else {
        return Err(Error::NotFound("person"));
    };
    let mut sources = Vec::with_capacity(person.sources.len());
    for link in &person.sources {
        sources.push(forget_source(app, store, customer, &link.source).await?);
    }
    let index = unindex_person(store, customer, &person, app.clock.now()).await?;
    let complete = index.is_some() && sources.iter().all(|s| s.outcome != SourceOutcome::Busy);
    tracing::info!(customer = %customer, person_id = %person_id, complete, "person forgotten");
    Ok(Forgotten { customer_id: customer.clone(), person_id, sources, index, complete })
}

async fn forget_source<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SyncWorkerStore,
    customer: &CustomerId,
    source: &SourceRef,
) -> Result<SourceForgotten, Error> {
    let mut out = SourceForgotten { source: source.clone(), outcome: SourceOutcome::Removed, removed: BTreeMap::new() };
    let connection = &source.connection_id;
    let live =
        store.get_connection(connection).await?.filter(|r| r.customer == *customer && !r.is_disconnecting_or_gone());
    if live.is_none() {
        out.outcome = SourceOutcome::ConnectionGone;
        return Ok(out);
    }
    let run = run_id()?;
    let now: OffsetDateTime = app.clock.now();
    let mut next_seq = match store.take_lease(connection, &run, now, now + time::Duration::minutes(5)).await? {
        Lease::Taken(k) => k.next_seq,
        Lease::Held { .. } => {
            out.outcome = SourceOutcome::Busy;
            return Ok(out);
        }
        Lease::NoKey => {
            store.forget_individual(connection, &source.entity_id, &source.individual_id).await?;
            return Ok(out);
        }
    };
    let result = async {
        store.forget_individual(connection, &source.entity_id, &source.individual_id).await?;
        let changes = records_of(store, source).await?;
        for chunk in changes.chunks(MAX_CHANGES_PER_WRITE) {
            match store.apply_changes(connection, &run, next_seq, chunk, app.clock.now()).await? {
                Applied::Yes => next_seq += chunk.len() as u64,
                Applied::LeaseLost => return Ok(SourceOutcome::Busy),
            }
            for c in chunk {
                *out.removed.entry(c.kind.as_str()).or_default() += 1;
            }
        }
        Ok::<_, Error>(SourceOutcome::Removed)
    }
    .await;
    store.release_lease(connection, &run).await?;
    out.outcome = result?;
    Ok(out)
}

/// The removals of every record of one source: its directory entry, individual, employment,
/// and each pay statement (every payment of its entity is looked in).
async fn records_of(store: &dyn SyncWorkerStore, source: &SourceRef) -> Result<Vec<RecordChange>, Error> {
    let (connection, entity, individual) = (&source.connection_id, &source.entity_id, &source.individual_id);
    let removal =
        |kind, id: String| RecordChange { kind, entity: entity.clone(), id, op: ChangeOp::Removed, content: None };
    let mut out = Vec::new();
    let own: Vec<(RecordKind, _, String)> = [RecordKind::Directory, RecordKind::Individual, RecordKind::Employment]
        .into_iter()
        .map(|k| (k, entity.clone(), individual.clone()))
        .collect();
    for r in store.records(connection, &own).await? {
        out.push(removal(r.kind, r.id));
    }
    let mut payments = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let (page, next) = store.record_hashes(connection, RecordKind::Payment, entity, "", start.as_deref()).await?;
        payments.extend(page.into_iter().map(|h| payment_id_of(&h.id).to_owned()));
        start = next;
        if start.is_none() {
            break;
        }
    }
    for payment in payments {
        let base = format!("{payment}.{individual}");
        let mut start: Option<String> = None;
        loop {
            let (page, next) =
                store.record_hashes(connection, RecordKind::PayStatement, entity, &base, start.as_deref()).await?;
            for h in page {
                // `<payment>.<individual>` and its `.<n>` repeats, nobody else's.
                if h.id == base || h.id.strip_prefix(&base).is_some_and(|rest| rest.starts_with('.')) {
                    out.push(removal(RecordKind::PayStatement, h.id));
                }
            }
            start = next;
            if start.is_none() {
                break;
            }
        }
    }
    Ok(out)
}
