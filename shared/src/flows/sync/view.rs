//! What the app reads: a connection's sync state, its change feed and its people, from Perch's
//! store only (never Finch inline), each for the caller's own connections only.
//!
//! **Pages stay small.** A change-feed page holds at most [`MAX_CHANGES`] entries and an
//! employee page [`MAX_EMPLOYEES`] people: a person's three records are a few kilobytes, so a
//! full page is a fraction of Lambda's 6 MB response limit.
//!
//! **Cursors** are opaque to the app and carry only a position (a feed sequence, or the last
//! person's entity and id), never data; a cursor Perch did not issue is a 400. The feed's
//! `next_cursor` is always given: with `has_more: false` it is where to poll from next.
//!
//! **Records** are opened under the connection's data key, unwrapped by KMS and kept for
//! `SECRET_CACHE_TTL_SECONDS` in the container ([`crate::crypto::records::DataKeyCache`]).
//! A feed entry is served with the record's *current* version (a record changed twice since
//! the cursor shows its latest twice); a removed record has none.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::value::RawValue;
use time::{Date, OffsetDateTime};

use super::{SyncQueue, SyncWork, Trigger, mark_queued};
use crate::app::{Adapters, AppState};
use crate::crypto::records::{DataKey, RecordId};
use crate::domain::people::SourceRef;
use crate::domain::sync::{ChangeOp, Counts, LastSuccess, PayState, PaySync, RecordKind, SyncStatus, iso_date};
use crate::domain::{ConnectionId, CustomerId, EntityId, Error, PersonId};
use crate::flows::lifecycle::owned_connection;
use crate::store::data::StoredRecord;
use crate::store::{ConnectionRecord, DataReadStore};

/// Most entries in one page of the feed, and the default.
pub const MAX_CHANGES: usize = 1_000;
pub const DEFAULT_CHANGES: usize = 100;
/// Most people in one page of the joined view, and the default.
pub const MAX_EMPLOYEES: usize = 500;
pub const DEFAULT_EMPLOYEES: usize = 100;

/// One entity's sync, as the app sees it.
#[derive(Debug, Clone, Serialize)]
pub struct EntitySync {
    pub entity_id: EntityId,
    #[serde(flatten)]
    pub status: SyncStatus,
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub requested_at: Option<OffsetDateTime>,
    /// The run in progress (or paused by the deadline or a rate limit).
    pub progress: Option<Progress>,
    pub last_success: Option<LastSuccess>,
    /// The pay history (absent until a run reached it).
    pub pay: Option<PayProgress>,
}

/// How far an entity's pay history has come.
#[derive(Debug, Clone, Serialize)]
pub struct PayProgress {
    #[serde(flatten)]
    pub state: PayState,
    /// The earliest pay date synced (Finch's lookback).
    #[serde(with = "iso_date")]
    pub from: Date,
    /// Payments are listed from this pay date through the next.
    #[serde(with = "iso_date::option")]
    pub listed_from: Option<Date>,
    #[serde(with = "iso_date::option")]
    pub listed_through: Option<Date>,
    /// Pay periods (payments, an off-cycle run counting as one) whose statements are all in,
    /// of those listed so far.
    pub pay_periods_done: u32,
    pub pay_periods_total: u32,
    pub pay_statements: u64,
    /// Payments whose statements Finch is still fetching: asked again later, alone.
    pub waiting_for_finch: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
}

impl From<&PaySync> for PayProgress {
    fn from(p: &PaySync) -> Self {
        Self {
            state: p.state.clone(),
            from: p.from,
            listed_from: p.listed_from,
            listed_through: p.listed_through,
            pay_periods_done: p.payments_done,
            pay_periods_total: p.payments,
            pay_statements: p.statements,
            waiting_for_finch: u32::try_from(p.pending.iter().filter(|x| x.waiting.is_some()).count())
                .unwrap_or(u32::MAX),
            last_success: p.last_success,
        }
    }
}

/// How far a run has come.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub directory_pages: u32,
    pub people_listed: u64,
    pub counts: Counts,
}

/// `GET /connections/{id}/sync`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    pub connection_id: ConnectionId,
    pub entities: Vec<EntitySync>,
}

/// The caller's connection, live (a disconnected one has no data left).
async fn live_connection(
    store: &dyn DataReadStore,
    customer: &CustomerId,
    raw_id: &str,
) -> Result<ConnectionRecord, Error> {
    let rec = owned_connection(store, customer, raw_id).await?;
    if rec.is_disconnecting_or_gone() {
        return Err(Error::conflict(
            "connection_disconnected",
            "This connection was disconnected: its data was deleted.",
        ));
    }
    Ok(rec)
}

/// The sync state of each of the connection's entities.
pub async fn sync_view<A: Adapters>(app: &AppState<A>, customer: &CustomerId, raw_id: &str) -> Result<SyncView, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let rec = live_connection(store, customer, raw_id).await?;
    view_of(store, &rec).await
}

async fn view_of(store: &dyn DataReadStore, rec: &ConnectionRecord) -> Result<SyncView, Error> {
    let mut states: HashMap<EntityId, _> =
        store.sync_states(&rec.connection_id).await?.into_iter().map(|s| (s.entity.clone(), s.record)).collect();
    let entities = rec
        .live_entities()
        .map(|e| match states.remove(&e.id) {
            Some(r) => EntitySync {
                entity_id: e.id.clone(),
                status: r.status,
                attempts: r.attempts,
                next_attempt_at: r.next_attempt_at,
                requested_at: r.requested_at,
                progress: r.run.map(|c| Progress {
                    started_at: c.started_at,
                    directory_pages: c.pages,
                    people_listed: c.directory_offset,
                    counts: c.counts,
                }),
                pay: r.pay.as_ref().map(PayProgress::from),
                last_success: r.last_success,
            },
            None => EntitySync {
                entity_id: e.id.clone(),
                status: SyncStatus::NotStarted,
                attempts: 0,
                next_attempt_at: None,
                requested_at: None,
                progress: None,
                last_success: None,
                pay: None,
            },
        })
        .collect();
    Ok(SyncView { connection_id: rec.connection_id.clone(), entities })
}

/// `POST /connections/{id}/sync`'s answer: the state, and whether this call queued a run.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRequested {
    /// `false` when a run was already queued or running: the call changed nothing.
    pub queued: bool,
    #[serde(flatten)]
    pub view: SyncView,
}

/// Asks for a run now, unless one is queued or running (idempotent while it is).
pub async fn request_sync<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
) -> Result<SyncRequested, Error> {
    let queue = app.sync_queue.as_deref().ok_or_else(|| Error::internal("SYNC_QUEUE_URL is not set"))?;
    let store: &dyn DataReadStore = app.store.as_ref();
    let rec = live_connection(store, customer, raw_id).await?;
    if !rec.is_live_at_finch() || rec.status == crate::domain::ConnectionStatus::Reauth {
        return Err(Error::conflict(
            "connection_not_syncable",
            "Finch does not accept this connection's token now (reauthentication needed, or disconnected at Finch).",
        ));
    }
    let now = app.clock.now();
    let running = store
        .read_key(&rec.connection_id)
        .await?
        .is_some_and(|k| k.run.is_some() && k.lease_until.is_some_and(|u| u > now));
    let states = store.sync_states(&rec.connection_id).await?;
    let queued = states.iter().any(|s| {
        s.record.status == SyncStatus::Queued && s.record.requested_at.is_some_and(|at| now - at < super::PLANNED_FOR)
    });
    if running || queued {
        return Ok(SyncRequested { queued: false, view: view_of(store, &rec).await? });
    }
    mark_queued(store, &rec, now).await?;
    queue.send(&[SyncWork::new(rec.connection_id.clone(), Trigger::Requested)], std::time::Duration::ZERO).await?;
    let mut view = view_of(store, &rec).await?;
    for e in &mut view.entities {
        if e.status == SyncStatus::NotStarted {
            e.status = SyncStatus::Queued;
        }
    }
    Ok(SyncRequested { queued: true, view })
}

/// One entry of a feed page.
#[derive(Debug, Serialize)]
pub struct Change {
    pub seq: u64,
    pub entity_id: EntityId,
    pub kind: RecordKind,
    /// The individual's id (a company's is `company`).
    pub id: String,
    pub op: ChangeOp,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// The record as it is now; absent once removed.
    pub record: Option<Box<RawValue>>,
}

/// `GET /connections/{id}/changes`.
#[derive(Debug, Serialize)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    pub next_cursor: String,
    pub has_more: bool,
}

pub(crate) fn bad_cursor() -> Error {
    Error::invalid("invalid_cursor", "The cursor is not one Perch issued for this list.")
}

fn feed_cursor(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("f1:{seq}"))
}

fn parse_feed_cursor(c: &str) -> Result<u64, Error> {
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad_cursor())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad_cursor())?;
    text.strip_prefix("f1:").and_then(|n| n.parse().ok()).ok_or_else(bad_cursor)
}

fn people_cursor(entity: &EntityId, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("p1:{}\n{id}", entity.as_str()))
}

fn parse_people_cursor(c: &str) -> Result<(EntityId, String), Error> {
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad_cursor())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad_cursor())?;
    let (entity, id) = text.strip_prefix("p1:").and_then(|t| t.split_once('\n')).ok_or_else(bad_cursor)?;
    Ok((EntityId::parse(entity).map_err(|_| bad_cursor())?, id.to_owned()))
}

/// The page size asked for: `default` when absent, 1 to `max`.
pub fn page_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, Error> {
    match raw {
        None => Ok(default),
        Some(v) => {
            v.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                Error::invalid("invalid_limit", format!("limit must be a whole number from 1 to {max}."))
            })
        }
    }
}

/// The connection's data key, unwrapped (or cached); `None` when it has none (nothing synced).
pub(crate) async fn data_key<A: Adapters>(
    app: &AppState<A>,
    rec: &ConnectionRecord,
) -> Result<Option<std::sync::Arc<DataKey>>, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    match store.read_key(&rec.connection_id).await? {
        Some(k) => {
            Ok(Some(app.data_keys.get(app.cipher.as_ref(), &k.wrapped, &rec.connection_id, &rec.customer).await?))
        }
        None => Ok(None),
    }
}

pub(crate) fn open(key: &DataKey, rec: &ConnectionRecord, r: &StoredRecord) -> Result<Box<RawValue>, Error> {
    let rid = RecordId { connection: &rec.connection_id, entity: r.entity.as_str(), kind: r.kind.as_str(), id: &r.id };
    let plain = key.open(rid, &r.sealed)?;
    let text = String::from_utf8(plain).map_err(|_| Error::internal("a stored record is not UTF-8"))?;
    RawValue::from_string(text).map_err(|e| Error::internal_from("a stored record is not JSON", e))
}

/// A page of the connection's changes after `cursor` (from the first without one).
pub async fn changes<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<ChangesPage, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let after = cursor.map(parse_feed_cursor).transpose()?.unwrap_or(0);
    let rec = live_connection(store, customer, raw_id).await?;
    let mut entries = store.feed(&rec.connection_id, after, limit + 1).await?;
    let has_more = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = feed_cursor(entries.last().map_or(after, |e| e.seq));
    let wanted: Vec<(RecordKind, EntityId, String)> = entries
        .iter()
        .filter(|e| e.op != ChangeOp::Removed)
        .map(|e| (e.kind, e.entity.clone(), e.id.clone()))
        .collect();
    let mut current: HashMap<(RecordKind, EntityId, String), StoredRecord> = HashMap::new();
    for chunk in wanted.chunks(100) {
        for r in store.records(&rec.connection_id, chunk).await? {
            current.insert((r.kind, r.entity.clone(), r.id.clone()), r);
        }
    }
    let key = if current.is_empty() { None } else { data_key(app, &rec).await? };
    let mut changes = Vec::with_capacity(entries.len());
    for e in entries {
        let record = match (&key, current.get(&(e.kind, e.entity.clone(), e.id.clone()))) {
            (Some(k), Some(r)) if e.op != ChangeOp::Removed => Some(open(k, &rec, r)?),
            _ => None,
        };
        changes.push(Change {
            seq: e.seq,
            entity_id: e.entity,
            kind: e.kind,
            id: e.id,
            op: e.op,
            changed_at: e.at,
            record,
        });
    }
    Ok(ChangesPage { changes, next_cursor, has_more })
}

/// One person of the joined view: directory, individual and employment by `individual_id`.
#[derive(Debug, Serialize)]
pub struct Employee {
    pub entity_id: EntityId,
    pub individual_id: String,
    /// The person across the customer's connections (`GET /people/{person_id}`), once indexed.
    pub person_id: Option<PersonId>,
    pub directory: Box<RawValue>,
    pub individual: Option<Box<RawValue>>,
    pub employment: Option<Box<RawValue>>,
}

/// `GET /connections/{id}/employees`.
#[derive(Debug, Serialize)]
pub struct EmployeesPage {
    pub employees: Vec<Employee>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// Directory entries a search reads at most per request: a search that has not found a page
/// of matches by then answers with what it has and a cursor to read on from.
pub const SEARCH_SCAN: usize = 2_000;

/// Whether a directory entry's names contain `q` (lower-cased, spaces ignored): first, middle,
/// preferred and last name, and "first last".
fn matches(directory: &RawValue, q: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(directory.get()).unwrap_or(serde_json::Value::Null);
    let name = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_lowercase();
    let (first, last) = (name("first_name"), name("last_name"));
    let hay = [format!("{first} {last}"), name("middle_name"), name("preferred_name"), format!("{last} {first}")];
    hay.iter().any(|h| h.contains(q))
}

/// A page of the connection's people, as last synced, in (entity, id) order; with `q`, only
/// those whose name contains it (a search reads at most [`SEARCH_SCAN`] entries a request).
/// Each person carries their `person_id` across connections, once indexed.
pub async fn employees<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
    cursor: Option<&str>,
    limit: usize,
    q: Option<&str>,
) -> Result<EmployeesPage, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let after = cursor.map(parse_people_cursor).transpose()?;
    let rec = live_connection(store, customer, raw_id).await?;
    let q = q.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
    if q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(Error::invalid("invalid_query", "q must be at most 100 characters."));
    }
    let scan = scan_directory(app, store, &rec, after, limit, q.as_deref()).await?;
    let next_cursor = scan.has_more.then(|| scan.after.as_ref().map(|(e, id)| people_cursor(e, id))).flatten();
    let Some(key) = scan.key.filter(|_| !scan.people.is_empty()) else {
        return Ok(EmployeesPage { employees: Vec::new(), next_cursor, has_more: scan.has_more });
    };
    let employees = join_people(store, customer, &rec, &key, scan.people).await?;
    Ok(EmployeesPage { employees, next_cursor, has_more: scan.has_more })
}

/// What a read of the directory found: the people of the page (records and opened entries),
/// the last entry read, whether more lie past it, and the connection's data key once needed.
struct DirectoryScan {
    people: Vec<(StoredRecord, Box<RawValue>)>,
    after: Option<(EntityId, String)>,
    has_more: bool,
    key: Option<std::sync::Arc<DataKey>>,
}

/// Reads the directory from `after` until `limit` people (matching `q`, if any) are found, the
/// directory ends, or a search has read [`SEARCH_SCAN`] entries.
async fn scan_directory<A: Adapters>(
    app: &AppState<A>,
    store: &dyn DataReadStore,
    rec: &ConnectionRecord,
    mut after: Option<(EntityId, String)>,
    limit: usize,
    q: Option<&str>,
) -> Result<DirectoryScan, Error> {
    let mut people: Vec<(StoredRecord, Box<RawValue>)> = Vec::with_capacity(limit);
    let mut key: Option<std::sync::Arc<DataKey>> = None;
    let mut scanned = 0;
    let mut has_more = false;
    while people.len() < limit {
        let want = if q.is_some() { 200 } else { limit - people.len() };
        let page = directory_after(store, rec, &after, want + 1).await?;
        if page.is_empty() {
            break;
        }
        if key.is_none() {
            key = data_key(app, rec).await?;
        }
        let Some(k) = key.as_ref() else { break };
        let more = page.len() > want;
        for r in page.into_iter().take(want) {
            after = Some((r.entity.clone(), r.id.clone()));
            scanned += 1;
            let directory = open(k, rec, &r)?;
            if q.is_none_or(|q| matches(&directory, q)) {
                people.push((r, directory));
                if people.len() == limit {
                    break;
                }
            }
        }
        has_more = more || people.len() == limit;
        if !more || scanned >= SEARCH_SCAN {
            break;
        }
    }
    // Whether anything lies past the last entry given: a plain page knows from its extra entry;
    // a search that filled its page or ran out of scan says so, to be read on from the cursor.
    if q.is_none() {
        has_more = people.len() == limit && !directory_after(store, rec, &after, 1).await?.is_empty();
    }
    Ok(DirectoryScan { people, after, has_more, key })
}

/// Up to `n` directory entries after `after`.
async fn directory_after(
    store: &dyn DataReadStore,
    rec: &ConnectionRecord,
    after: &Option<(EntityId, String)>,
    n: usize,
) -> Result<Vec<StoredRecord>, Error> {
    store
        .records_page(&rec.connection_id, RecordKind::Directory, after.as_ref().map(|(e, id)| (e, id.as_str())), n)
        .await
}

/// The directory entries found, each with its individual and employment records and its
/// person across connections (read a hundred at a time).
async fn join_people(
    store: &dyn DataReadStore,
    customer: &CustomerId,
    rec: &ConnectionRecord,
    key: &DataKey,
    people: Vec<(StoredRecord, Box<RawValue>)>,
) -> Result<Vec<Employee>, Error> {
    let mut wanted = Vec::with_capacity(people.len() * 2);
    for (p, _) in &people {
        wanted.push((RecordKind::Individual, p.entity.clone(), p.id.clone()));
        wanted.push((RecordKind::Employment, p.entity.clone(), p.id.clone()));
    }
    let mut joined: HashMap<(RecordKind, EntityId, String), StoredRecord> = HashMap::new();
    for chunk in wanted.chunks(100) {
        for r in store.records(&rec.connection_id, chunk).await? {
            joined.insert((r.kind, r.entity.clone(), r.id.clone()), r);
        }
    }
    let sources: Vec<SourceRef> = people
        .iter()
        .map(|(p, _)| SourceRef {
            connection_id: rec.connection_id.clone(),
            entity_id: p.entity.clone(),
            individual_id: p.id.clone(),
        })
        .collect();
    let mut persons: HashMap<SourceRef, PersonId> = HashMap::new();
    for chunk in sources.chunks(100) {
        for l in store.source_links(customer, chunk).await? {
            persons.insert(l.source, l.person);
        }
    }
    let mut employees = Vec::with_capacity(people.len());
    for ((p, directory), source) in people.into_iter().zip(sources) {
        let mut part =
            |kind| joined.remove(&(kind, p.entity.clone(), p.id.clone())).map(|r| open(key, rec, &r)).transpose();
        let individual = part(RecordKind::Individual)?;
        let employment = part(RecordKind::Employment)?;
        employees.push(Employee {
            person_id: persons.remove(&source),
            directory,
            entity_id: p.entity,
            individual_id: p.id,
            individual,
            employment,
        });
    }
    Ok(employees)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(parse_feed_cursor(&feed_cursor(42)).unwrap(), 42);
        let e = EntityId::parse("0b6f3c9e-8f6e-4a51-9d0a-2a3f5c7e9b10").unwrap();
        assert_eq!(parse_people_cursor(&people_cursor(&e, "p-1")).unwrap(), (e.clone(), "p-1".to_owned()));
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode("f1:x"), &people_cursor(&e, "p"), &URL_SAFE_NO_PAD.encode("p1:x")]
        {
            assert!(parse_feed_cursor(bad).is_err(), "{bad}");
        }
        assert!(parse_people_cursor(&feed_cursor(1)).is_err());
        assert_eq!(page_limit(None, 100, 500).unwrap(), 100);
        assert!(page_limit(Some("0"), 100, 500).is_err() && page_limit(Some("501"), 100, 500).is_err());
    }
}
