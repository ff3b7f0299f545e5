//! The person index ([`crate::store::people`]) in the records table: `pk` = `P#<customer>`.
//!
//! | `sk` | what |
//! |---|---|
//! | `MKEY` | `wrapped` (B), `key_id`: the customer's match key, wrapped by KMS |
//! | `LEASE` | `holder`, `until` (unix s) |
//! | `CUR#<connection>` | `seq` |
//! | `PER#<person_id>` | `p` (the [`Person`] as JSON: ids, rules, keyed hashes, times) |
//! | `SRC#<connection>#<entity>#<individual_id>` | `l` (the [`SourceLink`] as JSON) |
//! | `MK#<rule>#<hash>` | `h` (the [`KeyHolders`] as JSON): linking keys only (`MatchRule::links`); the domains and personal e-mails, which link no one, live in `PER#` and `SRC#` items alone |
//!
//! Writes go out as batch writes in the order the port documents (keys, persons, sources,
//! persons removed, cursor), under the customer's lease: one indexer per customer.

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, ReturnValue, WriteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::DynamoStore;
use super::data::{PK, SK};
use super::item::{Item, get_n, get_s, n, s};
use crate::crypto::records::WrappedDataKey;
use crate::domain::people::{KeyHolders, MatchKey, Person, SourceLink, SourceRef};
use crate::domain::{ConnectionId, CustomerId, Error, PersonId};
use crate::store::people::{IndexWrites, PersonIndex};

fn pk(c: &CustomerId) -> String {
    format!("P#{c}")
}

fn source_sk(s: &SourceRef) -> String {
    format!("SRC#{}#{}#{}", s.connection_id, s.entity_id, s.individual_id)
}

fn key_sk(k: &MatchKey) -> String {
    format!("MK#{}#{}", k.rule.as_str(), k.hash)
}

fn person_sk(p: &PersonId) -> String {
    format!("PER#{p}")
}

fn cursor_sk(c: &ConnectionId) -> String {
    format!("CUR#{c}")
}

fn key(customer: &CustomerId, sk: String) -> Item {
    Item::from([(PK.to_owned(), s(pk(customer))), (SK.to_owned(), s(sk))])
}

fn json_of<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::internal_from("serialising an index item", e))
}

fn parse<T: DeserializeOwned>(item: &Item, attr: &str) -> Result<T, Error> {
    serde_json::from_str(get_s(item, attr)?).map_err(|e| Error::internal_from("an index item Perch cannot read", e))
}

fn put(customer: &CustomerId, sk: String, attr: &str, body: String) -> Result<WriteRequest, Error> {
    let mut item = key(customer, sk);
    item.insert(attr.to_owned(), s(body));
    let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| Error::internal_from("a put", e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete(customer: &CustomerId, sk: String) -> Result<WriteRequest, Error> {
    let del = DeleteRequest::builder()
        .set_key(Some(key(customer, sk)))
        .build()
        .map_err(|e| Error::internal_from("a delete", e))?;
    Ok(WriteRequest::builder().delete_request(del).build())
}

impl DynamoStore {
    /// `requests`, 25 a batch, in order.
    async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), Error> {
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            self.batch_write(requests.by_ref().take(25).collect()).await?;
        }
        Ok(())
    }

    async fn get_all<T: DeserializeOwned>(
        &self,
        customer: &CustomerId,
        sks: Vec<String>,
        attr: &str,
    ) -> Result<Vec<T>, Error> {
        let mut sks = sks;
        sks.sort();
        sks.dedup();
        let keys = sks.into_iter().map(|sk| key(customer, sk)).collect();
        self.batch_get(keys).await?.iter().map(|i| parse(i, attr)).collect()
    }

    /// Up to `limit` items of `customer`'s partition whose keys start with `prefix`, after
    /// `start`.
    async fn index_range(
        &self,
        customer: &CustomerId,
        prefix: &str,
        mut start: Option<String>,
        limit: usize,
    ) -> Result<Vec<Item>, Error> {
        let mut out = Vec::new();
        while out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let page = self
                .client
                .query()
                .table_name(self.records_table()?)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", s(pk(customer)))
                .expression_attribute_values(":p", s(prefix))
                .set_exclusive_start_key(start.map(|sk| key(customer, sk)))
                .limit(want)
                .consistent_read(true)
                .send()
                .await
                .map_err(crate::aws::error("dynamodb", "Query"))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key.as_ref().and_then(|k| k.get(SK)).and_then(|v| v.as_s().ok()).cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl PersonIndex for DynamoStore {
    async fn read_match_key(&self, customer: &CustomerId) -> Result<Option<WrappedDataKey>, Error> {
        let got = self
            .client
            .get_item()
            .table_name(self.records_table()?)
            .set_key(Some(key(customer, "MKEY".into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        let Some(item) = got.item else { return Ok(None) };
        let ciphertext = item
            .get("wrapped")
            .and_then(|v| v.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| Error::internal("a match key item without its wrapped key"))?;
        Ok(Some(WrappedDataKey { ciphertext, key_id: get_s(&item, "key_id")?.to_owned() }))
    }

    async fn create_match_key(&self, customer: &CustomerId, wrapped: &WrappedDataKey) -> Result<bool, Error> {
        let mut item = key(customer, "MKEY".into());
        item.insert("wrapped".into(), AttributeValue::B(Blob::new(wrapped.ciphertext.clone())));
        item.insert("key_id".into(), s(&wrapped.key_id));
        let res = self
            .client
            .put_item()
            .table_name(self.records_table()?)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        super::conditional("PutItem", res)
    }

    async fn take_index(
        &self,
        customer: &CustomerId,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let res = self
            .client
            .update_item()
            .table_name(self.records_table()?)
            .set_key(Some(key(customer, "LEASE".into())))
            .update_expression("SET holder = :h, #until = :until")
            .condition_expression("attribute_not_exists(holder) OR holder = :h OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":until", n(until.unix_timestamp()))
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            .return_values(ReturnValue::None)
            .send()
            .await;
        super::conditional("UpdateItem", res)
    }

    async fn release_index(&self, customer: &CustomerId, holder: &str) -> Result<(), Error> {
        let res = self
            .client
            .delete_item()
            .table_name(self.records_table()?)
            .set_key(Some(key(customer, "LEASE".into())))
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder))
            .send()
            .await;
        super::conditional("DeleteItem", res).map(drop)
    }

    async fn index_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<u64, Error> {
        let got = self
            .client
            .get_item()
            .table_name(self.records_table()?)
            .set_key(Some(key(customer, cursor_sk(connection))))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        match got.item {
            Some(i) => Ok(u64::try_from(get_n(&i, "seq")?).unwrap_or(0)),
            None => Ok(0),
        }
    }

    async fn source_links(&self, customer: &CustomerId, sources: &[SourceRef]) -> Result<Vec<SourceLink>, Error> {
        self.get_all(customer, sources.iter().map(source_sk).collect(), "l").await
    }

    async fn key_holders(&self, customer: &CustomerId, keys: &[MatchKey]) -> Result<Vec<KeyHolders>, Error> {
        self.get_all(customer, keys.iter().map(key_sk).collect(), "h").await
    }

    async fn persons(&self, customer: &CustomerId, ids: &[PersonId]) -> Result<Vec<Person>, Error> {
        self.get_all(customer, ids.iter().map(person_sk).collect(), "p").await
    }

    async fn write_index(&self, customer: &CustomerId, w: &IndexWrites) -> Result<(), Error> {
        let c = customer;
        let mut requests = Vec::new();
        for k in &w.keys {
            requests.push(put(c, key_sk(&k.key), "h", json_of(k)?)?);
        }
        for k in &w.keys_removed {
            requests.push(delete(c, key_sk(k))?);
        }
        self.write_all(std::mem::take(&mut requests)).await?;
        for p in &w.persons {
            requests.push(put(c, person_sk(&p.person_id), "p", json_of(p)?)?);
        }
        self.write_all(std::mem::take(&mut requests)).await?;
        for l in &w.sources {
            requests.push(put(c, source_sk(&l.source), "l", json_of(l)?)?);
        }
        for src in &w.sources_removed {
            requests.push(delete(c, source_sk(src))?);
        }
        self.write_all(std::mem::take(&mut requests)).await?;
        for p in &w.persons_removed {
            requests.push(delete(c, person_sk(p))?);
        }
        self.write_all(std::mem::take(&mut requests)).await?;
        if let Some((connection, seq)) = &w.cursor {
            let mut item = key(c, cursor_sk(connection));
            item.insert("seq".into(), n(*seq));
            self.client
                .put_item()
                .table_name(self.records_table()?)
                .set_item(Some(item))
                .send()
                .await
                .map_err(crate::aws::error("dynamodb", "PutItem"))?;
        }
        Ok(())
    }

    async fn persons_page(
        &self,
        customer: &CustomerId,
        after: Option<&PersonId>,
        limit: usize,
    ) -> Result<Vec<Person>, Error> {
        let items = self.index_range(customer, "PER#", after.map(person_sk), limit).await?;
        items.iter().map(|i| parse(i, "p")).collect()
    }

    async fn connection_links(
        &self,
        customer: &CustomerId,
        connection: &ConnectionId,
        after: Option<&SourceRef>,
        limit: usize,
    ) -> Result<Vec<SourceLink>, Error> {
        let prefix = format!("SRC#{connection}#");
        let items = self.index_range(customer, &prefix, after.map(source_sk), limit).await?;
        items.iter().map(|i| parse(i, "l")).collect()
    }

    async fn drop_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(self.records_table()?)
            .set_key(Some(key(customer, cursor_sk(connection))))
            .send()
            .await
            .map(drop)
            .map_err(crate::aws::error("dynamodb", "DeleteItem"))
    }
}
