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

use super::item::{Item, employer_attributes, entities, get_s, n, opt_s, products, s, ts};
use super::keys::{self, GSI1PK, GSI1SK, INDEX_BY_CUSTOMER, KIND, PK, kind};
use super::{DynamoStore, conditional, is_condition_failure};
use crate::crypto::EncryptedToken;
use crate::domain::{CodeHash, ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId, Error, EventId};
use crate::store::{
    ApplyPushedEntityStatus, ApplyPushedStatus, CheckConnections, ConnectionRecord, ConnectionSummary, DisconnectSteps,
    ListConnections, Observation, Page, Pushed, ReadConnection, ReplaceTokens, RequestRefresh, SaveConnection,
    SaveOutcome, ScanPage, pushed_instant,
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
        self.get_consistent(keys::connection(id)).await?.as_ref().map(ConnectionRecord::from_item).transpose()
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
        take_claim_from: Option<&ConnectionId>,
    ) -> Result<SaveOutcome, Error> {
        let outcome = if expected_version.is_none() { SaveOutcome::Created } else { SaveOutcome::Replaced };
        let lost =
            || Error::conflict("connection_changed", "The connection changed while it was being saved; try again.");
        let (condition, names, values) = save_condition(record, expected_version);
        let claim = record.employer_key.as_deref().filter(|_| expected_version.is_none());
        if code.is_none() && claim.is_none() {
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
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(crate::aws::build_error)?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if let Some(code) = code {
            items.push(
                TransactWriteItem::builder()
                    .update(super::codes::mark_done(&self.table, code, &record.connection_id, &record.customer)?)
                    .build(),
            );
        }
        if let Some(key) = claim {
            items.push(
                TransactWriteItem::builder().put(self.claim_put(key, &record.connection_id, take_claim_from)?).build(),
            );
        }
        let claim_index = items.len() - 1;
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(outcome),
            Err(e) => {
                let failed: Vec<usize> = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(t)) => t
                        .cancellation_reasons()
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect(),
                    _ => return Err(crate::aws::error("dynamodb", "TransactWriteItems")(e)),
                };
                if failed.is_empty() {
                    return Err(crate::aws::error("dynamodb", "TransactWriteItems")(e));
                }
                // Only the claim refused: another connection stands for this employer.
                if let Some(key) = claim
                    && failed == [claim_index]
                    && let Some(holder) = self.claim_holder(key).await?
                    && holder != record.connection_id
                {
                    return Ok(SaveOutcome::ClaimedBy(holder));
                }
                Err(lost())
            }
        }
    }
}

impl DynamoStore {
    /// The put of an employer claim: new, or taken over from `take_from`.
    fn claim_put(&self, key: &str, holder: &ConnectionId, take_from: Option<&ConnectionId>) -> Result<Put, Error> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .item(PK, s(keys::employer(key)))
            .item(KIND, s(kind::EMPLOYER))
            .item("connection_id", s(holder.as_str()));
        put = match take_from {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(old) => put
                .condition_expression("attribute_not_exists(pk) OR connection_id = :old")
                .expression_attribute_values(":old", s(old.as_str())),
        };
        put.build().map_err(crate::aws::build_error)
    }

    /// One item, strongly consistent.
    async fn get_consistent(&self, pk: String) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        Ok(out.item)
    }

    /// Which connection holds an employer claim.
    async fn claim_holder(&self, key: &str) -> Result<Option<ConnectionId>, Error> {
        self.get_consistent(keys::employer(key))
            .await?
            .as_ref()
            .and_then(|i| opt_s(i, "connection_id"))
            .map(ConnectionId::parse)
            .transpose()
            .map_err(Into::into)
    }

    /// Frees an employer claim if `holder` still holds it. Best effort: a claim left behind
    /// is taken over by the next connection of that employer (the callback finds its holder
    /// gone), so a failure is only logged.
    async fn release_claim(&self, key: &str, holder: &ConnectionId) {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(keys::employer(key)))
            .condition_expression("connection_id = :c")
            .expression_attribute_values(":c", s(holder.as_str()))
            .send()
            .await;
        if let Err(e) = conditional("DeleteItem", res) {
            tracing::warn!(connection_id = %holder, error = %e.chain(), "employer claim not released; the next connection of this employer takes it over");
        }
    }

    /// Takes an employer claim for `holder` unless another connection holds it: an UpdateItem
    /// that creates the item, so the disconnect function needs no PutItem. Best effort, as
    /// above.
    async fn take_claim(&self, key: &str, holder: &ConnectionId) {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::employer(key)))
            .update_expression("SET #kind = :kind, connection_id = :c")
            .condition_expression("attribute_not_exists(pk) OR connection_id = :c")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":kind", s(kind::EMPLOYER))
            .expression_attribute_values(":c", s(holder.as_str()))
            .send()
            .await;
        if let Err(e) = conditional("UpdateItem", res) {
            tracing::warn!(connection_id = %holder, error = %e.chain(), "employer claim not moved");
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
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let key = res.as_ref().ok().and_then(|o| o.attributes.as_ref()).and_then(|a| opt_s(a, "employer_key"));
        let done = conditional("UpdateItem", res)?;
        if let Some(key) = key {
            self.release_claim(&key, id).await;
        }
        Ok(done)
    }

    async fn disconnect_entity(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        request_id: Option<&str>,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let now = OffsetDateTime::now_utc();
        let mut set = "SET entities.#e.#status = :disconnected, entities.#e.disconnected_at = :now, \
                       entities.#e.observed_at = :now, updated_at = :now, #version = #version + :one"
            .to_owned();
        let mut req = self
            .update_connection(id)
            .condition_expression(
                "attribute_exists(entities.#e) AND attribute_not_exists(entities.#e.disconnected_at) \
                 AND #status <> :disconnecting AND attribute_not_exists(disconnected_at)",
            )
            .expression_attribute_names("#e", entity.as_str())
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnected", s(ConnectionStatus::Disconnected.as_str()))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .expression_attribute_values(":now", ts(now));
        if let Some(r) = request_id {
            set.push_str(", last_finch_request_id = :rid");
            req = req.expression_attribute_values(":rid", s(r));
        }
        let res = req.update_expression(set).return_values(ReturnValue::AllNew).send().await;
        let after = match res {
            Ok(out) => out.attributes.ok_or_else(|| Error::internal("UpdateItem ALL_NEW returned nothing"))?,
            Err(e) if is_condition_failure(&e) => return Ok(None),
            Err(e) => return Err(crate::aws::error("dynamodb", "UpdateItem")(e)),
        };
        let mut record = ConnectionRecord::from_item(&after)?;
        // The claim follows the entity set the connection still covers.
        let new_key = record.current_employer_key();
        if new_key != record.employer_key {
            let res = self
                .update_connection(id)
                .update_expression(match new_key {
                    Some(_) => "SET employer_key = :k, #version = #version + :one",
                    None => "REMOVE employer_key SET #version = #version + :one",
                })
                .set_expression_attribute_values(Some(
                    [(":one".to_owned(), n(1))]
                        .into_iter()
                        .chain(new_key.as_ref().map(|k| (":k".to_owned(), s(k.clone()))))
                        .collect(),
                ))
                .send()
                .await;
            if conditional("UpdateItem", res)? {
                if let Some(old) = &record.employer_key {
                    self.release_claim(old, id).await;
                }
                if let Some(new) = &new_key {
                    self.take_claim(new, id).await;
                }
                record.employer_key = new_key;
                record.version += 1;
            }
        }
        Ok(Some(record))
    }
}

impl DynamoStore {
    /// A pushed status's write: `set` (a SET clause, which may use `:status`, `:observed`,
    /// `:now`) and `tail` (a REMOVE clause, or nothing), applied only to a live connection and
    /// only if `newer` holds (`:second_end` is the end of the event's second), returning the
    /// item as it was either way.
    fn pushed_update(
        &self,
        id: &ConnectionId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
        (set, tail): (&str, &str),
        newer: &str,
    ) -> UpdateItemFluentBuilder {
        self.update_connection(id)
            .update_expression(format!("{set}, updated_at = :now, #version = #version + :one {tail}"))
            .condition_expression(format!(
                "attribute_exists(pk) AND #kind = :connection AND #status <> :disconnecting \
                 AND attribute_not_exists(disconnected_at) AND {newer}"
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":observed", ts(pushed_instant(observed_at)))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()))
            .expression_attribute_values(
                ":second_end",
                ts(pushed_instant(observed_at) + time::Duration::milliseconds(1)),
            )
            .expression_attribute_values(":connection", s(kind::CONNECTION))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }
}

/// What a pushed status's write did: applied (the record before), or refused — `Unknown` when
/// there was no item, else what `refused` makes of the item as it is.
fn pushed_outcome(
    res: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<UpdateItemError, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    >,
    refused: impl FnOnce(ConnectionRecord) -> Pushed,
) -> Result<Pushed, Error> {
    match res {
        Ok(out) => {
            let item = out.attributes.ok_or_else(|| Error::internal("UpdateItem ALL_OLD returned nothing"))?;
            Ok(Pushed::Applied(Box::new(ConnectionRecord::from_item(&item)?)))
        }
        Err(e) => match e.as_service_error() {
            // The old item comes back only when there is one.
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                match c.item.as_ref().filter(|i| !i.is_empty()) {
                    None => Ok(Pushed::Unknown),
                    Some(item) => Ok(refused(ConnectionRecord::from_item(item)?)),
                }
            }
            _ => Err(crate::aws::error("dynamodb", "UpdateItem")(e)),
        },
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
            .pushed_update(
                id,
                status,
                observed_at,
                (
                    "SET #status = :status, status_observed_at = :observed, last_event_id = :event",
                    "REMOVE status_message",
                ),
                "(attribute_not_exists(status_observed_at) OR status_observed_at < :second_end)",
            )
            .expression_attribute_values(":event", s(event.as_str()))
            .send()
            .await;
        pushed_outcome(res, |_| Pushed::Stale)
    }
}

#[async_trait]
impl ApplyPushedEntityStatus for DynamoStore {
    async fn apply_pushed_entity_status(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
    ) -> Result<Pushed, Error> {
        let res = self
            .pushed_update(
                id,
                status,
                observed_at,
                ("SET entities.#e.#status = :status, entities.#e.observed_at = :observed", ""),
                "attribute_exists(entities.#e) \
                 AND (attribute_not_exists(entities.#e.observed_at) OR entities.#e.observed_at < :second_end)",
            )
            .expression_attribute_names("#e", entity.as_str())
            .send()
            .await;
        pushed_outcome(res, |rec| {
            if rec.entities.iter().any(|e| e.id == *entity) { Pushed::Stale } else { Pushed::NoSuchEntity }
        })
    }
}

#[async_trait]
impl RequestRefresh for DynamoStore {
    async fn request_refresh(&self, id: &ConnectionId, at: OffsetDateTime) -> Result<bool, Error> {
        let res = self
            .update_connection(id)
            .update_expression("SET refresh_requested_at = :at, #version = #version + :one")
            .condition_expression(
                "attribute_exists(pk) AND #kind = :connection AND #status <> :disconnecting \
                 AND attribute_not_exists(disconnected_at)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":at", ts(at))
            .expression_attribute_values(":connection", s(kind::CONNECTION))
            .expression_attribute_values(":disconnecting", s(ConnectionState::DISCONNECTING))
            .send()
            .await;
        conditional("UpdateItem", res)
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
                 AND (((attribute_not_exists(checked_at) OR checked_at < :cutoff) \
                       AND (attribute_not_exists(status_observed_at) OR status_observed_at < :cutoff)) \
                      OR (attribute_exists(refresh_requested_at) \
                          AND (attribute_not_exists(checked_at) OR checked_at < refresh_requested_at)))",
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
        let mut remove = vec!["refresh_requested_at"];
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
        if let Some(e) = &obs.entities {
            set.push("entities = :entities".into());
            req = req.expression_attribute_values(":entities", entities(e));
        }
        if let Some(employer) = &obs.employer {
            // What Finch said now; a fact it did not repeat is kept.
            for (attr, value) in employer_attributes(employer) {
                if let Some(v) = value {
                    set.push(format!("{attr} = :{attr}"));
                    req = req.expression_attribute_values(format!(":{attr}"), s(v.clone()));
                }
            }
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
