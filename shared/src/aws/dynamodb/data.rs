//! The records table ([`crate::store::data`]): `pk` = `C#<connection>`, `sk` = the item.
//!
//! | `sk` | what |
//! |---|---|
//! | `KEY` | `wrapped` (B), `key_id`, `next_seq`, `run`, `lease_until` (unix s) |
//! | `SYNC#<entity>` | `state` (the [`SyncRecord`] as JSON: ids, times, counts), `version`, and while due, `due_shard` + `due_at` (unix s): the sparse `due` index |
//! | `R#<kind>#<entity>#<id>` | `ct` (B, sealed), `h` (B, keyed hash), `seq` |
//! | `CH#<seq, 20 digits>` | `kind`, `entity`, `id`, `op`, `at` (unix ms) |
//! | `SEEN#<run>#<entity>#<page>#<part>` | `ids` (newline-separated), `expires_at` |
//! | `FORGOT#<entity>#<individual_id>` | (the key alone): a person never stored again |
//!
//! Record and feed keys sort as their order: the records of a kind by entity then id, the feed
//! by sequence (fixed width). Reads that decide anything are strongly consistent.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, DeleteRequest, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
    Update, WriteRequest,
};
use time::OffsetDateTime;

use super::item::{Item, get_n, get_s, n, s};
use super::{DynamoStore, conditional};
use crate::crypto::records::{ContentHash, WrappedDataKey};
use crate::domain::sync::{ChangeOp, RecordKind, SyncRecord};
use crate::domain::{ConnectionId, EntityId, Error};
use crate::store::data::{
    Applied, DataKeyItem, DataKeyItems, Due, DueSyncs, FeedEntry, Lease, MAX_CHANGES_PER_WRITE, PurgeData,
    RecordChange, RecordReads, RecordWrites, StoredHash, StoredRecord, SyncItem, SyncStates,
};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL: &str = "expires_at";
/// The sparse index of due syncs.
pub const INDEX_DUE: &str = "due";
pub const DUE_SHARD: &str = "due_shard";
pub const DUE_AT: &str = "due_at";
/// One partition of the due index: a sync state is written a few times a day per entity, far
/// below the thousand writes a second one index partition takes.
const DUE: &str = "DUE";
const KEY: &str = "KEY";
/// How long a run's page ids are kept: longer than any run.
const SEEN_TTL: time::Duration = time::Duration::days(2);
/// Ids per `SEEN#` item: well inside DynamoDB's 400 KB item for ids of Finch's size.
const SEEN_PER_ITEM: usize = 4_000;

fn pk(c: &ConnectionId) -> String {
    format!("C#{c}")
}

fn record_prefix(kind: RecordKind, entity: Option<&EntityId>) -> String {
    match entity {
        Some(e) => format!("R#{}#{e}#", kind.as_str()),
        None => format!("R#{}#", kind.as_str()),
    }
}

fn record_sk(kind: RecordKind, entity: &EntityId, id: &str) -> String {
    format!("{}{id}", record_prefix(kind, Some(entity)))
}

fn feed_sk(seq: u64) -> String {
    format!("CH#{seq:020}")
}

fn sync_sk(e: &EntityId) -> String {
    format!("SYNC#{e}")
}

fn seen_prefix(run: &str, e: &EntityId) -> String {
    format!("SEEN#{run}#{e}#")
}

fn key_of(c: &ConnectionId, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(pk(c))), (SK.to_owned(), s(sk))])
}

fn bytes(item: &Item, k: &str) -> Result<Vec<u8>, Error> {
    item.get(k)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref().to_vec())
        .ok_or_else(|| Error::internal(format!("a records-table item lacks binary attribute {k}")))
}

fn hash(item: &Item) -> Result<ContentHash, Error> {
    bytes(item, "h")?.try_into().map_err(|_| Error::internal("a stored content hash is not 32 bytes"))
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_unix(v: i64) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|_| Error::internal("a stored time is out of range"))
}

fn built<T, E: std::error::Error + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, Error> {
    r.map_err(|e| Error::internal_from("building a records-table request", e))
}

fn key_item(item: &Item) -> Result<DataKeyItem, Error> {
    Ok(DataKeyItem {
        wrapped: WrappedDataKey { ciphertext: bytes(item, "wrapped")?, key_id: get_s(item, "key_id")?.to_owned() },
        next_seq: u64::try_from(get_n(item, "next_seq")?).unwrap_or(1),
        run: item.get("run").and_then(|v| v.as_s().ok()).cloned(),
        lease_until: item.get("lease_until").map(|_| get_n(item, "lease_until").and_then(from_unix)).transpose()?,
    })
}

/// `(kind, entity, id)` of a record's `sk`.
fn parse_record_sk(sk: &str) -> Result<(RecordKind, EntityId, String), Error> {
    let bad = || Error::internal("a record key Perch did not write");
    let rest = sk.strip_prefix("R#").ok_or_else(bad)?;
    let (kind, rest) = rest.split_once('#').ok_or_else(bad)?;
    let (entity, id) = rest.split_once('#').ok_or_else(bad)?;
    Ok((RecordKind::parse(kind).ok_or_else(bad)?, EntityId::parse(entity).map_err(|_| bad())?, id.to_owned()))
}

fn stored_record(item: &Item) -> Result<StoredRecord, Error> {
    let (kind, entity, id) = parse_record_sk(get_s(item, SK)?)?;
    Ok(StoredRecord {
        kind,
        entity,
        id,
        sealed: bytes(item, "ct")?,
        hash: hash(item)?,
        seq: u64::try_from(get_n(item, "seq")?).unwrap_or(0),
    })
}

fn sync_item(item: &Item) -> Result<SyncItem, Error> {
    let entity = get_s(item, SK)?
        .strip_prefix("SYNC#")
        .and_then(|e| EntityId::parse(e).ok())
        .ok_or_else(|| Error::internal("a sync state key Perch did not write"))?;
    let record: SyncRecord = serde_json::from_str(get_s(item, "state")?)
        .map_err(|e| Error::internal_from("a stored sync state Perch cannot read", e))?;
    Ok(SyncItem { entity, record, version: u64::try_from(get_n(item, "version")?).unwrap_or(0) })
}

/// Whether a cancelled transaction was cancelled by one of its conditions.
fn cancelled_by_condition(e: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, super::HttpResponse>) -> bool {
    matches!(
        e.as_service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(t))
            if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
    )
}

impl DynamoStore {
    pub(super) fn records_table(&self) -> Result<&str, Error> {
        self.records
            .as_deref()
            .ok_or_else(|| Error::internal("RECORDS_TABLE_NAME is not set for a function that reads synced data"))
    }

    /// Every page of a query's items (bounded by what the caller asks for).
    async fn query_prefix(
        &self,
        c: &ConnectionId,
        prefix: &str,
        start_sk: Option<String>,
        limit: Option<i32>,
        projection: Option<&str>,
    ) -> Result<(Vec<Item>, Option<String>), Error> {
        let out = self
            .client
            .query()
            .table_name(self.records_table()?)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk(c)))
            .expression_attribute_values(":p", s(prefix))
            .set_exclusive_start_key(start_sk.map(|sk| key_of(c, sk)))
            .set_limit(limit)
            .set_projection_expression(projection.map(str::to_owned))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "Query"))?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| k.get(SK)).and_then(|v| v.as_s().ok()).cloned();
        Ok((out.items.unwrap_or_default(), next))
    }

    /// Up to `limit` records whose sort keys start with `range`, after `start`, in key order.
    async fn records_in(
        &self,
        c: &ConnectionId,
        range: &str,
        mut start: Option<String>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let mut out = Vec::with_capacity(limit.min(1_000));
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let (items, next) = self.query_prefix(c, range, start, Some(want), None).await?;
            for i in &items {
                out.push(stored_record(i)?);
            }
            start = next;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The items of `keys` (distinct), those that exist, in any order: 100 a request, again
    /// while DynamoDB hands some back.
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, Error> {
        let table = self.records_table()?.to_owned();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut wanted = chunk.to_vec();
            for attempt in 0..8u32 {
                if wanted.is_empty() {
                    break;
                }
                let ask = built(KeysAndAttributes::builder().set_keys(Some(wanted)).consistent_read(true).build())?;
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&table, ask)
                    .send()
                    .await
                    .map_err(crate::aws::error("dynamodb", "BatchGetItem"))?;
                out.extend(got.responses.and_then(|mut r| r.remove(&table)).unwrap_or_default());
                wanted = got.unprocessed_keys.and_then(|mut u| u.remove(&table)).map(|k| k.keys).unwrap_or_default();
                if !wanted.is_empty() {
                    tokio::time::sleep(crate::finch::backoff(attempt) / 10).await;
                }
            }
            if !wanted.is_empty() {
                return Err(Error::Aws {
                    service: "dynamodb",
                    operation: "BatchGetItem",
                    retryable: true,
                    source: "keys still unprocessed after 8 attempts".into(),
                });
            }
        }
        Ok(out)
    }

    /// Writes `requests` (≤ 25), again while DynamoDB hands some back.
    pub(super) async fn batch_write(&self, mut requests: Vec<WriteRequest>) -> Result<(), Error> {
        let table = self.records_table()?.to_owned();
        for attempt in 0..8u32 {
            if requests.is_empty() {
                return Ok(());
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&table, requests)
                .send()
                .await
                .map_err(crate::aws::error("dynamodb", "BatchWriteItem"))?;
            requests = out.unprocessed_items.and_then(|mut m| m.remove(&table)).unwrap_or_default();
            if !requests.is_empty() {
                tokio::time::sleep(crate::finch::backoff(attempt) / 10).await;
            }
        }
        Err(Error::Aws {
            service: "dynamodb",
            operation: "BatchWriteItem",
            retryable: true,
            source: "items still unprocessed after 8 attempts".into(),
        })
    }
}

#[async_trait]
impl DataKeyItems for DynamoStore {
    async fn read_key(&self, connection: &ConnectionId) -> Result<Option<DataKeyItem>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(self.records_table()?)
            .set_key(Some(key_of(connection, KEY.into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        out.item.as_ref().map(key_item).transpose()
    }

    async fn create_key(
        &self,
        connection: &ConnectionId,
        wrapped: &WrappedDataKey,
        run: &str,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let live = ConditionCheck::builder()
            .table_name(&self.table)
            .key(super::keys::PK, s(super::keys::connection(connection)))
            .condition_expression(
                "attribute_exists(pk) AND #status <> :disconnecting AND attribute_not_exists(disconnected_at)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnecting", s("disconnecting"))
            .build();
        let mut item = key_of(connection, KEY.into());
        item.insert("wrapped".into(), AttributeValue::B(Blob::new(wrapped.ciphertext.clone())));
        item.insert("key_id".into(), s(&wrapped.key_id));
        item.insert("next_seq".into(), n(1));
        item.insert("run".into(), s(run));
        item.insert("lease_until".into(), n(unix(lease_until)));
        let put = Put::builder()
            .table_name(self.records_table()?)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(built(live)?).build())
            .transact_items(TransactWriteItem::builder().put(built(put)?).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if cancelled_by_condition(&e) => Ok(false),
            Err(e) => Err(crate::aws::error("dynamodb", "TransactWriteItems")(e)),
        }
    }

    async fn take_lease(
        &self,
        connection: &ConnectionId,
        run: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Lease, Error> {
        let res = self
            .client
            .update_item()
            .table_name(self.records_table()?)
            .set_key(Some(key_of(connection, KEY.into())))
            .update_expression("SET #run = :run, lease_until = :until")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#run) OR #run = :run OR lease_until <= :now)",
            )
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":run", s(run))
            .expression_attribute_values(":until", n(unix(until)))
            .expression_attribute_values(":now", n(unix(now)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Lease::Taken(key_item(&out.attributes.unwrap_or_default())?)),
            Err(e) if super::is_condition_failure(&e) => match self.read_key(connection).await? {
                None => Ok(Lease::NoKey),
                Some(k) => Ok(Lease::Held { until: k.lease_until.unwrap_or(now) }),
            },
            Err(e) => Err(crate::aws::error("dynamodb", "UpdateItem")(e)),
        }
    }

    async fn release_lease(&self, connection: &ConnectionId, run: &str) -> Result<(), Error> {
        let res = self
            .client
            .update_item()
            .table_name(self.records_table()?)
            .set_key(Some(key_of(connection, KEY.into())))
            .update_expression("REMOVE #run, lease_until")
            .condition_expression("#run = :run")
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":run", s(run))
            .send()
            .await;
        conditional("UpdateItem", res).map(drop)
    }
}

#[async_trait]
impl RecordWrites for DynamoStore {
    async fn apply_changes(
        &self,
        connection: &ConnectionId,
        run: &str,
        first_seq: u64,
        changes: &[RecordChange],
        at: OffsetDateTime,
    ) -> Result<Applied, Error> {
        if changes.is_empty() {
            return Ok(Applied::Yes);
        }
        if changes.len() > MAX_CHANGES_PER_WRITE {
            return Err(Error::internal(format!("{} changes in one write", changes.len())));
        }
        let table = self.records_table()?;
        let advance = Update::builder()
            .table_name(table)
            .set_key(Some(key_of(connection, KEY.into())))
            .update_expression("SET next_seq = :next")
            .condition_expression("#run = :run AND next_seq = :first")
            .expression_attribute_names("#run", "run")
            .expression_attribute_values(":run", s(run))
            .expression_attribute_values(":first", n(first_seq))
            .expression_attribute_values(":next", n(first_seq + changes.len() as u64))
            .build();
        let mut items = vec![TransactWriteItem::builder().update(built(advance)?).build()];
        let at_ms = at.unix_timestamp_nanos() / 1_000_000;
        for (i, c) in changes.iter().enumerate() {
            let seq = first_seq + i as u64;
            let rkey = key_of(connection, record_sk(c.kind, &c.entity, &c.id));
            let write = match (&c.op, &c.content) {
                (ChangeOp::Removed, _) => TransactWriteItem::builder()
                    .delete(built(Delete::builder().table_name(table).set_key(Some(rkey)).build())?),
                (_, Some((sealed, h))) => {
                    let mut item = rkey;
                    item.insert("ct".into(), AttributeValue::B(Blob::new(sealed.clone())));
                    item.insert("h".into(), AttributeValue::B(Blob::new(h.to_vec())));
                    item.insert("seq".into(), n(seq));
                    TransactWriteItem::builder()
                        .put(built(Put::builder().table_name(table).set_item(Some(item)).build())?)
                }
                (_, None) => return Err(Error::internal("an added or updated record without content")),
            };
            items.push(write.build());
            let mut entry = key_of(connection, feed_sk(seq));
            entry.insert("kind".into(), s(c.kind.as_str()));
            entry.insert("entity".into(), s(c.entity.as_str()));
            entry.insert("id".into(), s(&c.id));
            entry.insert("op".into(), s(c.op.as_str()));
            entry.insert("at".into(), n(at_ms));
            let put = Put::builder().table_name(table).set_item(Some(entry)).build();
            items.push(TransactWriteItem::builder().put(built(put)?).build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(Applied::Yes),
            Err(e) if cancelled_by_condition(&e) => Ok(Applied::LeaseLost),
            Err(e) => Err(crate::aws::error("dynamodb", "TransactWriteItems")(e)),
        }
    }

    async fn save_seen(
        &self,
        connection: &ConnectionId,
        run: &str,
        entity: &EntityId,
        page: u32,
        ids: &[String],
    ) -> Result<(), Error> {
        let expires = unix(OffsetDateTime::now_utc() + SEEN_TTL);
        let mut requests = Vec::new();
        for (part, chunk) in ids.chunks(SEEN_PER_ITEM).enumerate() {
            let mut item = key_of(connection, format!("{}{page:06}#{part:04}", seen_prefix(run, entity)));
            item.insert("ids".into(), s(chunk.join("\n")));
            item.insert(TTL.into(), n(expires));
            requests.push(
                WriteRequest::builder()
                    .put_request(built(aws_sdk_dynamodb::types::PutRequest::builder().set_item(Some(item)).build())?)
                    .build(),
            );
        }
        for chunk in requests.chunks(25) {
            self.batch_write(chunk.to_vec()).await?;
        }
        Ok(())
    }

    async fn forget_individual(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        individual: &str,
    ) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(self.records_table()?)
            .set_item(Some(key_of(connection, format!("FORGOT#{entity}#{individual}"))))
            .send()
            .await
            .map(drop)
            .map_err(crate::aws::error("dynamodb", "PutItem"))
    }

    async fn load_seen(&self, connection: &ConnectionId, run: &str, entity: &EntityId) -> Result<Vec<String>, Error> {
        let prefix = seen_prefix(run, entity);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_prefix(connection, &prefix, start, None, None).await?;
            for item in &items {
                out.extend(get_s(item, "ids")?.split('\n').filter(|x| !x.is_empty()).map(str::to_owned));
            }
            start = next;
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl RecordReads for DynamoStore {
    async fn record_hashes(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        entity: &EntityId,
        prefix: &str,
        start: Option<&str>,
    ) -> Result<(Vec<StoredHash>, Option<String>), Error> {
        let start_sk = start.map(|id| record_sk(kind, entity, id));
        let range = format!("{}{prefix}", record_prefix(kind, Some(entity)));
        let (items, next) = self.query_prefix(connection, &range, start_sk, None, Some("sk, h")).await?;
        let hashes = items
            .iter()
            .map(|i| {
                let (kind, _, id) = parse_record_sk(get_s(i, SK)?)?;
                Ok(StoredHash { kind, id, hash: hash(i)? })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let next = next.map(|sk| parse_record_sk(&sk).map(|(_, _, id)| id)).transpose()?;
        Ok((hashes, next))
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
        let range = format!("{}{prefix}", record_prefix(kind, Some(entity)));
        self.records_in(connection, &range, after.map(|id| record_sk(kind, entity, id)), limit).await
    }

    async fn records_page(
        &self,
        connection: &ConnectionId,
        kind: RecordKind,
        after: Option<(&EntityId, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let start = after.map(|(e, id)| record_sk(kind, e, id));
        self.records_in(connection, &record_prefix(kind, None), start, limit).await
    }

    async fn records(
        &self,
        connection: &ConnectionId,
        keys: &[(RecordKind, EntityId, String)],
    ) -> Result<Vec<StoredRecord>, Error> {
        // BatchGetItem refuses a request that names one key twice.
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let wanted = keys.iter().map(|(k, e, id)| key_of(connection, record_sk(*k, e, id))).collect();
        self.batch_get(wanted).await?.iter().map(stored_record).collect()
    }

    async fn forgotten(&self, connection: &ConnectionId, entity: &EntityId) -> Result<Vec<String>, Error> {
        let prefix = format!("FORGOT#{entity}#");
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_prefix(connection, &prefix, start, None, Some("sk")).await?;
            for i in &items {
                out.extend(get_s(i, SK)?.strip_prefix(&prefix).map(str::to_owned));
            }
            start = next;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn feed(&self, connection: &ConnectionId, after: u64, limit: usize) -> Result<Vec<FeedEntry>, Error> {
        let mut out = Vec::with_capacity(limit.min(1_000));
        let mut start = Some(feed_sk(after));
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let (items, next) = self.query_prefix(connection, "CH#", start, Some(want), None).await?;
            for i in &items {
                let seq = get_s(i, SK)?
                    .strip_prefix("CH#")
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| Error::internal("a feed key Perch did not write"))?;
                let bad = || Error::internal("a feed entry Perch did not write");
                out.push(FeedEntry {
                    seq,
                    kind: RecordKind::parse(get_s(i, "kind")?).ok_or_else(bad)?,
                    entity: EntityId::parse(get_s(i, "entity")?).map_err(|_| bad())?,
                    id: get_s(i, "id")?.to_owned(),
                    op: ChangeOp::parse(get_s(i, "op")?).ok_or_else(bad)?,
                    at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(get_n(i, "at")?) * 1_000_000)
                        .map_err(|_| bad())?,
                });
            }
            start = next;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SyncStates for DynamoStore {
    async fn sync_states(&self, connection: &ConnectionId) -> Result<Vec<SyncItem>, Error> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_prefix(connection, "SYNC#", start, None, None).await?;
            for i in &items {
                out.push(sync_item(i)?);
            }
            start = next;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn write_sync(
        &self,
        connection: &ConnectionId,
        entity: &EntityId,
        record: &SyncRecord,
        expected: u64,
    ) -> Result<bool, Error> {
        let state = serde_json::to_string(record).map_err(|e| Error::internal_from("serialising a sync state", e))?;
        let mut item = key_of(connection, sync_sk(entity));
        item.insert("state".into(), s(state));
        item.insert("version".into(), n(expected + 1));
        if let Some(at) = record.next_attempt_at {
            item.insert(DUE_SHARD.into(), s(DUE));
            item.insert(DUE_AT.into(), n(unix(at)));
        }
        let put = self.client.put_item().table_name(self.records_table()?).set_item(Some(item));
        let put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v").expression_attribute_values(":v", n(expected))
        };
        conditional("PutItem", put.send().await)
    }
}

#[async_trait]
impl DueSyncs for DynamoStore {
    async fn due_syncs(
        &self,
        now: OffsetDateTime,
        start: Option<&str>,
        limit: i32,
    ) -> Result<(Vec<Due>, Option<String>), Error> {
        let start_key = start
            .map(|raw| {
                let mut parts = raw.splitn(3, '\n');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(p), Some(k), Some(at)) => Ok(HashMap::from([
                        (PK.to_owned(), s(p)),
                        (SK.to_owned(), s(k)),
                        (DUE_SHARD.to_owned(), s(DUE)),
                        (DUE_AT.to_owned(), n(at)),
                    ])),
                    _ => Err(Error::internal("a due-index continuation Perch did not make")),
                }
            })
            .transpose()?;
        let out = self
            .client
            .query()
            .table_name(self.records_table()?)
            .index_name(INDEX_DUE)
            .key_condition_expression("due_shard = :d AND due_at <= :now")
            .expression_attribute_values(":d", s(DUE))
            .expression_attribute_values(":now", n(unix(now)))
            .set_exclusive_start_key(start_key)
            .limit(limit.max(1))
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "Query"))?;
        let next = match &out.last_evaluated_key {
            Some(k) => Some(format!("{}\n{}\n{}", get_s(k, PK)?, get_s(k, SK)?, get_n(k, DUE_AT)?)),
            None => None,
        };
        let mut due = Vec::new();
        for i in out.items.unwrap_or_default() {
            let connection = get_s(&i, PK)?
                .strip_prefix("C#")
                .and_then(|c| ConnectionId::parse(c).ok())
                .ok_or_else(|| Error::internal("a sync state under a key Perch did not write"))?;
            due.push(Due { connection, item: sync_item(&i)? });
        }
        Ok((due, next))
    }
}

#[async_trait]
impl PurgeData for DynamoStore {
    async fn shred_key(&self, connection: &ConnectionId) -> Result<bool, Error> {
        let out = self
            .client
            .delete_item()
            .table_name(self.records_table()?)
            .set_key(Some(key_of(connection, KEY.into())))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "DeleteItem"))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn purge_some(&self, connection: &ConnectionId, limit: usize) -> Result<bool, Error> {
        let want = i32::try_from(limit.max(1)).unwrap_or(1_000);
        let out = self
            .client
            .query()
            .table_name(self.records_table()?)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk(connection)))
            .projection_expression("pk, sk")
            .limit(want)
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "Query"))?;
        let items = out.items.unwrap_or_default();
        let more = out.last_evaluated_key.is_some();
        let deletes = items
            .into_iter()
            .map(|key| {
                Ok(WriteRequest::builder()
                    .delete_request(built(DeleteRequest::builder().set_key(Some(key)).build())?)
                    .build())
            })
            .collect::<Result<Vec<_>, Error>>()?;
        for chunk in deletes.chunks(25) {
            self.batch_write(chunk.to_vec()).await?;
        }
        Ok(!more)
    }
}
