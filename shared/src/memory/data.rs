//! The records table in memory, with the DynamoDB adapter's conditions: the lease, the feed's
//! sequence, the all-or-nothing change writes, the key's creation only for a live connection.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::store::MemoryStore;
use crate::crypto::records::WrappedDataKey;
use crate::domain::sync::{ChangeOp, RecordKind, SyncRecord};
use crate::domain::{ConnectionId, ConnectionState, EntityId, Error};
use crate::store::data::{
    Applied, DataKeyItem, DataKeyItems, Due, DueSyncs, FeedEntry, Lease, MAX_CHANGES_PER_WRITE, PurgeData,
    RecordChange, RecordReads, RecordWrites, StoredHash, StoredRecord, SyncItem, SyncStates,
};

type RecordKey = (ConnectionId, RecordKind, EntityId, String);

/// The records table's items, by kind.
#[derive(Default)]
pub(super) struct DataTables {
    keys: HashMap<ConnectionId, DataKeyItem>,
    syncs: BTreeMap<(ConnectionId, EntityId), SyncItem>,
    records: BTreeMap<RecordKey, StoredRecord>,
    feed: BTreeMap<(ConnectionId, u64), FeedEntry>,
    seen: BTreeMap<(ConnectionId, String, EntityId, u32), Vec<String>>,
    forgotten: std::collections::BTreeSet<(ConnectionId, EntityId, String)>,
}

impl DataTables {
    fn items_of(&self, c: &ConnectionId) -> usize {
        self.keys.contains_key(c) as usize
            + self.syncs.keys().filter(|(x, _)| x == c).count()
            + self.records.keys().filter(|k| &k.0 == c).count()
            + self.feed.keys().filter(|(x, _)| x == c).count()
            + self.seen.keys().filter(|k| &k.0 == c).count()
            + self.forgotten.iter().filter(|k| &k.0 == c).count()
    }
}

impl MemoryStore {
    /// How many items the records table holds for a connection (tests of the purge).
    pub fn data_items(&self, connection: &ConnectionId) -> usize {
        self.tables().data.items_of(connection)
    }

    /// A stored record as is (tests that tamper with one).
    pub fn stored_record(
        &self,
        c: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        id: &str,
    ) -> Option<StoredRecord> {
        self.tables().data.records.get(&(c.clone(), kind, entity.clone(), id.to_owned())).cloned()
    }
}

#[async_trait]
impl DataKeyItems for MemoryStore {
    async fn read_key(&self, connection: &ConnectionId) -> Result<Option<DataKeyItem>, Error> {
        Ok(self.enter("read_key")?.data.keys.get(connection).cloned())
    }

    async fn create_key(
        &self,
        connection: &ConnectionId,
        wrapped: &WrappedDataKey,
        run: &str,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let mut t = self.enter("create_key")?;
        let live = t
            .connections
            .get(connection)
            .is_some_and(|r| r.status != ConnectionState::Disconnecting && r.disconnected_at.is_none());
        if !live || t.data.keys.contains_key(connection) {
            return Ok(false);
        }
        let item = DataKeyItem {
            wrapped: wrapped.clone(),
            next_seq: 1,
            run: Some(run.to_owned()),
            lease_until: Some(lease_until),
        };
        t.data.keys.insert(connection.clone(), item);
        Ok(true)
    }

    async fn take_lease(
        &self,
        connection: &ConnectionId,
        run: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, Error> {
        let mut t = self.enter("take_lease")?;
        let Some(k) = t.data.keys.get_mut(connection) else { return Ok(Lease::NoKey) };
        match (&k.run, k.lease_until) {
            (Some(holder), Some(held)) if holder != run && held > now => Ok(Lease::Held { until: held }),
            _ => {
                k.run = Some(run.to_owned());
                k.lease_until = Some(until);
                Ok(Lease::Taken(k.clone()))
            }
        }
    }

    async fn release_lease(&self, connection: &ConnectionId, run: &str) -> Result<(), Error> {
        let mut t = self.enter("release_lease")?;
        if let Some(k) = t.data.keys.get_mut(connection).filter(|k| k.run.as_deref() == Some(run)) {
            k.run = None;
            k.lease_until = None;
        }
        Ok(())
    }
}

#[async_trait]
impl RecordWrites for MemoryStore {
    async fn apply_changes(
        &self,
        connection: &ConnectionId,
        run: &str,
        first_seq: u64,
        changes: &[RecordChange],
        at: OffsetDateTime,
    ) -> Result<Applied, Error> {
        if changes.len() > MAX_CHANGES_PER_WRITE {
            return Err(Error::internal(format!("{} changes in one write", changes.len())));
        }
        let mut t = self.enter("apply_changes")?;
        let d = &mut t.data;
        let Some(k) = d.keys.get_mut(connection) else { return Ok(Applied::LeaseLost) };
        if k.run.as_deref() != Some(run) || k.next_seq != first_seq {
            return Ok(Applied::LeaseLost);
        }
        k.next_seq = first_seq + changes.len() as u64;
        for (i, c) in changes.iter().enumerate() {
            let seq = first_seq + i as u64;
            let key = (connection.clone(), c.kind, c.entity.clone(), c.id.clone());
            match (&c.op, &c.content) {
                (ChangeOp::Removed, _) => {
                    d.records.remove(&key);
                }
                (_, Some((sealed, hash))) => {
                    let r = StoredRecord {
                        kind: c.kind,
                        entity: c.entity.clone(),
                        id: c.id.clone(),
                        sealed: sealed.clone(),
                        hash: *hash,
                        seq,
                    };
                    d.records.insert(key, r);
                }
                (_, None) => return Err(Error::internal("an added or updated record without content")),
            }
            let entry = FeedEntry { seq, kind: c.kind, entity: c.entity.clone(), id: c.id.clone(), op: c.op, at };
            d.feed.insert((connection.clone(), seq), entry);
        }
        Ok(Applied::Yes)
    }

    async fn save_seen(
        &self,
        connection: &ConnectionId,
        run: &str,
        entity: &EntityId,
        page: u32,
        ids: &[String],
    ) -> Result<(), Error> {
        let mut t = self.enter("save_seen")?;
        t.data.seen.insert((connection.clone(), run.to_owned(), entity.clone(), page), ids.to_vec());
        Ok(())
    }

    async fn load_seen(&self, connection: &ConnectionId, run: &str, entity: &EntityId) -> Result<Vec<String>, Error> {
        let t = self.enter("load_seen")?;
        Ok(t.data
            .seen
            .iter()
            .filter(|((c, r, e, _), _)| c == connection && r == run && e == entity)
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect())
    }

    async fn forget_individual(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        individual: &str,
    ) -> Result<(), Error> {
        let mut t = self.enter("forget_individual")?;
        t.data.forgotten.insert((connection.clone(), entity.clone(), individual.to_owned()));
        Ok(())
    }
}

/// Whether a record's key is `entity`'s, of `kind`, its id starting with `prefix` and after
/// `after`.
fn in_range(
    (c, k, e, id): &(ConnectionId, RecordKind, EntityId, String),
    connection: &ConnectionId,
    kind: RecordKind,
    entity: &EntityId,
    prefix: &str,
    after: Option<&str>,
) -> bool {
    c == connection && *k == kind && e == entity && id.starts_with(prefix) && after.is_none_or(|a| id.as_str() > a)
}

/// Pages of the memory adapter are as small as DynamoDB's are large: every caller's paging is
/// exercised by the fast tests.
const HASH_PAGE: usize = 7;

#[async_trait]
impl RecordReads for MemoryStore {
    async fn record_hashes(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        prefix: &str,
        start: Option<&str>,
    ) -> Result<(Vec<StoredHash>, Option<String>), Error> {
        let t = self.enter("record_hashes")?;
        let page: Vec<StoredHash> = t
            .data
            .records
            .iter()
            .filter(|(key, _)| in_range(key, connection, kind, entity, prefix, start))
            .take(HASH_PAGE + 1)
            .map(|(_, r)| StoredHash { kind: r.kind, id: r.id.clone(), hash: r.hash })
            .collect();
        Ok(paged(page))
    }

    async fn entity_records(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let t = self.enter("entity_records")?;
        Ok(t.data
            .records
            .iter()
            .filter(|(key, _)| in_range(key, connection, kind, entity, prefix, after))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn records_page(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        after: Option<(&EntityId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let t = self.enter("records_page")?;
        Ok(t.data
            .records
            .iter()
            .filter(|((c, k, e, id), _)| {
                c == connection && *k == kind && after.is_none_or(|(ae, aid)| (e, id.as_str()) > (ae, aid))
            })
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn records(
        &self,
        connection: &ConnectionId,
        keys: &[(RecordKind, EntityId, String)],
    ) -> Result<Vec<StoredRecord>, Error> {
        let t = self.enter("records")?;
        Ok(keys
            .iter()
            .filter_map(|(k, e, id)| t.data.records.get(&(connection.clone(), *k, e.clone(), id.clone())).cloned())
            .collect())
    }

    async fn feed(&self, connection: &ConnectionId, after: u64, limit: usize) -> Result<Vec<FeedEntry>, Error> {
        let t = self.enter("feed")?;
        Ok(t.data
            .feed
            .range((connection.clone(), after.saturating_add(1))..=(connection.clone(), u64::MAX))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn forgotten(&self, connection: &ConnectionId, entity: &EntityId) -> Result<Vec<String>, Error> {
        let t = self.enter("forgotten")?;
        Ok(t.data
            .forgotten
            .iter()
            .filter(|(c, e, _)| c == connection && e == entity)
            .map(|(_, _, i)| i.clone())
            .collect())
    }
}

fn paged(mut page: Vec<StoredHash>) -> (Vec<StoredHash>, Option<String>) {
    if page.len() > HASH_PAGE {
        page.truncate(HASH_PAGE);
        let next = page.last().map(|h| h.id.clone());
        return (page, next);
    }
    (page, None)
}

#[async_trait]
impl SyncStates for MemoryStore {
    async fn sync_states(&self, connection: &ConnectionId) -> Result<Vec<SyncItem>, Error> {
        let t = self.enter("sync_states")?;
        Ok(t.data.syncs.iter().filter(|((c, _), _)| c == connection).map(|(_, s)| s.clone()).collect())
    }

    async fn write_sync(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        record: &SyncRecord,
        expected: u64,
    ) -> Result<bool, Error> {
        let mut t = self.enter("write_sync")?;
        let key = (connection.clone(), entity.clone());
        let current = t.data.syncs.get(&key).map_or(0, |s| s.version);
        if current != expected {
            return Ok(false);
        }
        t.data.syncs.insert(key, SyncItem { entity: entity.clone(), record: record.clone(), version: expected + 1 });
        Ok(true)
    }
}

#[async_trait]
impl DueSyncs for MemoryStore {
    async fn due_syncs(
        &self,
        now: OffsetDateTime,
        start: Option<&str>,
        limit: i32,
    ) -> Result<(Vec<Due>, Option<String>), Error> {
        let t = self.enter("due_syncs")?;
        let mut due: Vec<Due> = t
            .data
            .syncs
            .iter()
            .filter(|(_, s)| s.record.next_attempt_at.is_some_and(|at| at <= now))
            .map(|((c, _), s)| Due { connection: c.clone(), item: s.clone() })
            .collect();
        due.sort_by_key(|d| (d.item.record.next_attempt_at, d.connection.clone(), d.item.entity.clone()));
        let skip = start.and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
        let limit = usize::try_from(limit.max(1)).unwrap_or(1);
        let page: Vec<Due> = due.iter().skip(skip).take(limit).cloned().collect();
        let next = (due.len() > skip + limit).then(|| (skip + limit).to_string());
        Ok((page, next))
    }
}

#[async_trait]
impl PurgeData for MemoryStore {
    async fn shred_key(&self, connection: &ConnectionId) -> Result<bool, Error> {
        Ok(self.enter("shred_key")?.data.keys.remove(connection).is_some())
    }

    async fn purge_some(&self, connection: &ConnectionId, limit: usize) -> Result<bool, Error> {
        let mut t = self.enter("purge_some")?;
        let d = &mut t.data;
        let mut left = limit;
        let take = |n: &mut usize| {
            if *n == 0 {
                return false;
            }
            *n -= 1;
            true
        };
        d.syncs.retain(|(c, _), _| c != connection || !take(&mut left));
        d.records.retain(|k, _| &k.0 != connection || !take(&mut left));
        d.feed.retain(|(c, _), _| c != connection || !take(&mut left));
        d.seen.retain(|k, _| &k.0 != connection || !take(&mut left));
        d.forgotten.retain(|k| &k.0 != connection || !take(&mut left));
        Ok(d.items_of(connection) == 0)
    }
}
