//! Connections (`CONN#`): the record and its KMS ciphertext, every write version-conditioned.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use time::OffsetDateTime;

use super::item::{Item, get_s, n, products, s, strings, ts};
use super::keys::{self, GSI1PK, GSI1SK, INDEX_BY_CUSTOMER, KIND, PK, kind};
use super::{DynamoStore, conditional, is_condition_failure};
use crate::crypto::EncryptedToken;
use crate::domain::{CodeHash, ConnectionId, ConnectionState, ConnectionStatus, CustomerId, Error, EventId};
use crate::store::{
    ApplyPushedStatus, CheckConnections, ConnectionRecord, ConnectionSummary, DisconnectSteps, ListConnections,
    Observation, Page, Pushed, ReadConnection, ReplaceTokens, SaveConnection, SaveOutcome, ScanPage, pushed_instant,
};

impl DynamoStore {
    /// An UpdateItem on a connection. Every write to a connection bumps its `version`, so the
    /// `#version` name and the `:one` increment come with it.
    fn update_connection(&self, id: &ConnectionId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::connection(id)))
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", n(1))
    }
}

/// A condition expression with its attribute names and values.
type Condition = (&'static str, Option<HashMap<String, String>>, Option<HashMap<String, AttributeValue>>);

/// The condition of a connection's save: absent (create), or the same customer's at the
/// version it was read at (replace). One definition for the plain put and the transaction's.
fn save_condition(record: &ConnectionRecord, expected_version: Option<u64>) -> Condition {
    match expected_version {
        None => ("attribute_not_exists(pk)", None, None),
        Some(v) => (
            "#version = :expected AND customer_id = :customer",
            Some(HashMap::from([("#version".to_owned(), "version".to_owned())])),
            Some(HashMap::from([
                (":expected".to_owned(), n(v)),
                (":customer".to_owned(), s(record.customer.as_str())),
            ])),
        ),
    }
}

#[async_trait]
impl ReadConnection for DynamoStore {
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::connection(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        out.item.as_ref().map(ConnectionRecord::from_item).transpose()
    }
}

#[async_trait]
impl ListConnections for DynamoStore {
    async fn list_connections(&self, customer: &CustomerId, limit: i32, cursor: Option<&str>) -> Result<Page, Error> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_CUSTOMER)
            .key_condition_expression("#gsi1pk = :c")
            .expression_attribute_names("#gsi1pk", GSI1PK)
            .expression_attribute_values(":c", s(keys::customer(customer)))
            .limit(limit);
        if let Some(c) = cursor {
            q = q.set_exclusive_start_key(Some(decode_cursor(customer, c)?));
        }
        let out = q.send().await.map_err(crate::aws::error("dynamodb", "Query"))?;
        let items = out.items().iter().map(ConnectionSummary::from_item).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = out.last_evaluated_key.as_ref().map(encode_cursor).transpose()?;
        Ok(Page { items, next_cursor })
    }
}

#[async_trait]
impl SaveConnection for DynamoStore {
    async fn save_connection(
        &self,
        record: &ConnectionRecord,
        expected_version: Option<u64>,
        code: Option<&CodeHash>,
    ) -> Result<SaveOutcome, Error> {
        let outcome = if expected_version.is_none() { SaveOutcome::Created } else { SaveOutcome::Replaced };
        let lost =
            || Error::conflict("connection_changed", "The connection changed while it was being saved; try again.");
        let (condition, names, values) = save_condition(record, expected_version);
        let Some(code) = code else {
            // One item: a conditional put does it at half a transaction's write cost.
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(record.to_item()))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await;
            return match res {
                Ok(_) => Ok(outcome),
                Err(e) if is_condition_failure(&e) => Err(lost()),
                Err(e) => Err(crate::aws::error("dynamodb", "PutItem")(e)),
            };
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(crate::aws::build_error)?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(super::codes::mark_done(&self.table, code, record)?).build(),
        ];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(outcome),
            Err(e) => {
                let lost_race = matches!(e.as_service_error(), Some(TransactWriteItemsError::TransactionCanceledException(t))
                    if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed")));
                if lost_race { Err(lost()) } else { Err(crate::aws::error("dynamodb", "TransactWriteItems")(e)) }
            }
        }
    }
}

#[async_trait]
impl DisconnectSteps for DynamoStore {
    async fn mark_disconnecting(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let res = self
            .update_connection(id)
            .update_expression(
                "SET #status = :disconnecting, disconnect_lease = :lease, updated_at = :now, #version = #version + :one",
            )
            .condition_expression("#version = :expected")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .expression_attribute_values(":lease", ts(lease_until))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()))
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        conditional("UpdateItem", res)
    }

    async fn release_disconnect(&self, id: &ConnectionId) -> Result<(), Error> {
        let res = self
            .update_connection(id)
            .update_expression("SET #version = #version + :one REMOVE disconnect_lease")
            .condition_expression("#status = :disconnecting")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .send()
            .await;
        // Finished meanwhile: nothing left to release.
        conditional("UpdateItem", res).map(|_| ())
    }

    async fn tombstone(&self, id: &ConnectionId, request_id: Option<&str>, note: Option<&str>) -> Result<bool, Error> {
        let mut req = self
            .update_connection(id)
            .condition_expression("#status = :disconnecting")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#gsi1pk", GSI1PK)
            .expression_attribute_names("#gsi1sk", GSI1SK)
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .expression_attribute_values(":disconnected", s(ConnectionStatus::Disconnected.as_str()))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()));
        let mut set =
            "SET #status = :disconnected, disconnected_at = :now, updated_at = :now, #version = #version + :one"
                .to_owned();
        if let Some(r) = request_id {
            req = req.expression_attribute_values(":rid", s(r));
            set.push_str(", last_finch_request_id = :rid");
        }
        if let Some(note) = note {
            req = req.expression_attribute_values(":note", s(note));
            set.push_str(", disconnect_note = :note");
        }
        let res = req
            .update_expression(format!(
                "{set} REMOVE token_ciphertext, token_key_id, disconnect_lease, #gsi1pk, #gsi1sk"
            ))
            .send()
            .await;
        conditional("UpdateItem", res)
    }
}

#[async_trait]
impl ApplyPushedStatus for DynamoStore {
    async fn apply_pushed_status(
        &self,
        id: &ConnectionId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
        event: &EventId,
    ) -> Result<Pushed, Error> {
        let res = self
            .update_connection(id)
            .update_expression(
                "SET #status = :status, status_observed_at = :observed, updated_at = :now, last_event_id = :event, \
                 #version = #version + :one REMOVE status_message",
            )
            .condition_expression(
                "attribute_exists(pk) AND #kind = :connection AND #status <> :disconnecting \
                 AND attribute_not_exists(disconnected_at) \
                 AND (attribute_not_exists(status_observed_at) OR status_observed_at < :second_end)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":observed", ts(pushed_instant(observed_at)))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()))
            .expression_attribute_values(":event", s(event.as_str()))
            .expression_attribute_values(
                ":second_end",
                ts(pushed_instant(observed_at) + time::Duration::milliseconds(1)),
            )
            .expression_attribute_values(":connection", s(kind::CONNECTION))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| Error::internal("UpdateItem ALL_OLD returned nothing"))?;
                Ok(Pushed::Applied(Box::new(ConnectionRecord::from_item(&item)?)))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    // The old item comes back only when there is one.
                    Ok(if c.item.as_ref().is_some_and(|i| !i.is_empty()) { Pushed::Stale } else { Pushed::Unknown })
                }
                _ => Err(crate::aws::error("dynamodb", "UpdateItem")(e)),
            },
        }
    }
}

#[async_trait]
impl CheckConnections for DynamoStore {
    async fn scan_due(
        &self,
        segment: i32,
        total_segments: i32,
        start: Option<&str>,
        limit: i32,
        cutoff: OffsetDateTime,
    ) -> Result<ScanPage, Error> {
        let q = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(total_segments)
            .limit(limit)
            .filter_expression(
                "#kind = :connection AND NOT #status IN (:disconnecting, :disconnected) \
                 AND attribute_not_exists(disconnected_at) \
                 AND (attribute_not_exists(checked_at) OR checked_at < :cutoff) \
                 AND (attribute_not_exists(status_observed_at) OR status_observed_at < :cutoff)",
            )
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":connection", s(kind::CONNECTION))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            // Revoked at Finch: nothing to learn until the app disconnects it here.
            .expression_attribute_values(":disconnected", s(ConnectionStatus::Disconnected.as_str()))
            .expression_attribute_values(":cutoff", ts(cutoff))
            .set_exclusive_start_key(start.map(|pk| HashMap::from([(PK.to_owned(), s(pk))])));
        scan_page(q.send().await.map_err(crate::aws::error("dynamodb", "Scan"))?)
    }

    async fn record_check(&self, id: &ConnectionId, expected_version: u64, obs: &Observation) -> Result<bool, Error> {
        let now = OffsetDateTime::now_utc();
        let mut set: Vec<String> = [
            "#status = :status",
            "status_observed_at = :observed",
            "checked_at = :now",
            "updated_at = :now",
            "#version = #version + :one",
        ]
        .map(String::from)
        .to_vec();
        let mut remove = Vec::new();
        let mut req = self
            .update_connection(id)
            .condition_expression(
                "#version = :expected AND #status <> :disconnecting AND attribute_not_exists(disconnected_at)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(obs.status.as_str()))
            .expression_attribute_values(":observed", ts(obs.observed_at))
            .expression_attribute_values(":now", ts(now))
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING));
        // Optional facts: set when observed; a message or sync time Finch no longer reports is
        // removed, while the last request id is only ever replaced.
        for (attr, value, remove_if_absent) in [
            ("status_message", &obs.status_message, true),
            ("last_successful_sync", &obs.last_successful_sync, true),
            ("last_finch_request_id", &obs.request_id, false),
        ] {
            match value {
                Some(v) => {
                    set.push(format!("{attr} = :{attr}"));
                    req = req.expression_attribute_values(format!(":{attr}"), s(v.clone()));
                }
                None if remove_if_absent => remove.push(attr),
                None => {}
            }
        }
        if let Some(p) = &obs.products {
            set.push("products = :products".into());
            req = req.expression_attribute_values(":products", products(p));
        }
        if let Some(e) = &obs.entity_ids {
            set.push("entity_ids = :entity_ids".into());
            req = req.expression_attribute_values(":entity_ids", strings(e));
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        conditional("UpdateItem", req.update_expression(expr).send().await)
    }
}

#[async_trait]
impl ReplaceTokens for DynamoStore {
    async fn scan_tokens_not_under(&self, key_arn: &str, start: Option<&str>, limit: i32) -> Result<ScanPage, Error> {
        let q = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(limit)
            .filter_expression("#kind = :connection AND attribute_exists(token_ciphertext) AND token_key_id <> :key")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":connection", s(kind::CONNECTION))
            .expression_attribute_values(":key", s(key_arn))
            .set_exclusive_start_key(start.map(|pk| HashMap::from([(PK.to_owned(), s(pk))])));
        scan_page(q.send().await.map_err(crate::aws::error("dynamodb", "Scan"))?)
    }

    async fn replace_token(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        token: &EncryptedToken,
    ) -> Result<bool, Error> {
        let res = self
            .update_connection(id)
            .update_expression("SET token_ciphertext = :ct, token_key_id = :key, #version = #version + :one")
            .condition_expression("#version = :expected AND attribute_exists(token_ciphertext)")
            .expression_attribute_values(":ct", s(STANDARD.encode(&token.ciphertext)))
            .expression_attribute_values(":key", s(token.key_id.clone()))
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        conditional("UpdateItem", res)
    }
}

/// A scan's page as records, and where it continues (the `pk` of the last item read).
fn scan_page(out: aws_sdk_dynamodb::operation::scan::ScanOutput) -> Result<ScanPage, Error> {
    let items = out.items().iter().map(ConnectionRecord::from_item).collect::<Result<Vec<_>, _>>()?;
    let next = out.last_evaluated_key.as_ref().map(|k| get_s(k, PK).map(str::to_owned)).transpose()?;
    Ok(ScanPage { items, next, scanned: out.scanned_count })
}

/// A cursor names only the position (sort key and connection id); the partition is always the
/// caller's own, so a cursor cannot be pointed at another customer's connections.
fn encode_cursor(key: &Item) -> Result<String, Error> {
    let sk = get_s(key, GSI1SK)?;
    let pk = get_s(key, PK)?;
    Ok(URL_SAFE_NO_PAD.encode(format!("{sk}\n{pk}")))
}

fn decode_cursor(customer: &CustomerId, cursor: &str) -> Result<Item, Error> {
    let bad = || Error::invalid("invalid_cursor", "The cursor is not one Perch issued.");
    if cursor.len() > 512 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (sk, pk) = text.split_once('\n').ok_or_else(bad)?;
    if !keys::is_connection(pk) || sk.is_empty() {
        return Err(bad());
    }
    Ok(HashMap::from([(GSI1PK.into(), s(keys::customer(customer))), (GSI1SK.into(), s(sk)), (PK.into(), s(pk))]))
}
