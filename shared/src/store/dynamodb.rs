//! The DynamoDB adapter. Item ↔ record conversion lives here and nowhere else.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    ConnectionRecord, ConnectionSummary, DISCONNECTING, ExchangeStart, FlowMode, Observation, Page, PendingFlow,
    SaveOutcome,
};
use crate::crypto::EncryptedToken;
use crate::error::Error;
use crate::types::{ConnectionId, ConnectionStatus, CustomerId, FinchCustomerId};

/// The customer → connections index.
pub const INDEX_BY_CUSTOMER: &str = "by_customer";
/// Non-key attributes the index projects: the listing, and never the token.
pub const LISTING_ATTRIBUTES: &[&str] = &[
    "connection_id",
    "customer_id",
    "provider_id",
    "company_name",
    "status",
    "products",
    "entity_ids",
    "finch_customer_id",
    "created_at",
    "updated_at",
    "checked_at",
];

/// How long a code-exchange marker is kept: codes live 10 minutes, replays come later.
const CODE_MARKER_TTL_SECS: i64 = 3600;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB store; one per container, cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|x| s(x.clone())).collect())
}

/// Timestamps are stored as fixed-width RFC 3339 (UTC, microseconds), so DynamoDB's string
/// comparison orders them in time — the webhook's "only if newer" condition relies on it.
pub(crate) fn stamp(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

fn ts(t: OffsetDateTime) -> AttributeValue {
    s(stamp(t))
}

fn get_s<'a>(item: &'a Item, k: &str) -> Result<&'a str, Error> {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| Error::internal(format!("stored item lacks string attribute {k}")))
}

fn opt_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, k: &str) -> Result<i64, Error> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::internal(format!("stored item lacks number attribute {k}")))
}

fn get_list(item: &Item, k: &str) -> Vec<String> {
    item.get(k)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|x| x.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

fn get_ts(item: &Item, k: &str) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::parse(get_s(item, k)?, &Rfc3339)
        .map_err(|e| Error::internal_from(format!("stored {k} is not RFC 3339"), e))
}

fn opt_ts(item: &Item, k: &str) -> Result<Option<OffsetDateTime>, Error> {
    if item.contains_key(k) { get_ts(item, k).map(Some) } else { Ok(None) }
}

fn is_ccf<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

/// The outcome of a conditional write: `true` if applied, `false` if its condition failed.
fn conditional<T, E>(operation: &'static str, res: Result<T, SdkError<E, HttpResponse>>) -> Result<bool, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_ccf(&e) => Ok(false),
        Err(e) => Err(ddb_err(operation, e)),
    }
}

/// A scan's page as records, and where it continues.
fn scan_page(out: aws_sdk_dynamodb::operation::scan::ScanOutput) -> Result<ScanPage, Error> {
    let items = out.items().iter().map(ConnectionRecord::from_item).collect::<Result<Vec<_>, _>>()?;
    let next = out.last_evaluated_key.as_ref().map(|k| get_s(k, "pk").map(str::to_owned)).transpose()?;
    Ok(ScanPage { items, next, scanned: out.scanned_count })
}

fn conn_pk(id: &ConnectionId) -> String {
    format!("CONN#{id}")
}

fn cust_pk(c: &CustomerId) -> String {
    format!("CUST#{c}")
}

fn sort_key(created_at: OffsetDateTime, id: &ConnectionId) -> String {
    format!("{}#{id}", stamp(created_at))
}

type HttpResponse = aws_sdk_dynamodb::config::http::HttpResponse;

fn ddb_err<E>(operation: &'static str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let r = crate::error::aws_retryable(&e);
    Error::aws("dynamodb", operation, r, e)
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::internal_from("building a DynamoDB request", e)
}

impl ConnectionRecord {
    fn to_item(&self) -> Item {
        let mut item: Item = HashMap::from([
            ("pk".into(), s(conn_pk(&self.connection_id))),
            ("kind".into(), s("connection")),
            ("connection_id".into(), s(self.connection_id.as_str())),
            ("customer_id".into(), s(self.customer.as_str())),
            ("finch_customer_id".into(), s(self.finch_customer_id.as_str())),
            ("provider_id".into(), s(self.provider_id.clone())),
            ("status".into(), s(self.status.as_str())),
            ("products".into(), list(&self.products)),
            ("entity_ids".into(), list(&self.entity_ids)),
            ("created_at".into(), ts(self.created_at)),
            ("updated_at".into(), ts(self.updated_at)),
            ("version".into(), n(self.version)),
        ]);
        if let Some(t) = &self.token {
            item.insert("token_ciphertext".into(), s(STANDARD.encode(&t.ciphertext)));
            item.insert("token_key_id".into(), s(t.key_id.clone()));
        }
        // Tombstones leave the customer's listing.
        if self.disconnected_at.is_none() {
            item.insert("gsi1pk".into(), s(cust_pk(&self.customer)));
            item.insert("gsi1sk".into(), s(sort_key(self.created_at, &self.connection_id)));
        }
        for (k, v) in [
            ("status_observed_at", self.status_observed_at),
            ("checked_at", self.checked_at),
            ("disconnected_at", self.disconnected_at),
        ] {
            if let Some(t) = v {
                item.insert(k.into(), ts(t));
            }
        }
        for (k, v) in [
            ("company_name", &self.company_name),
            ("status_message", &self.status_message),
            ("last_successful_sync", &self.last_successful_sync),
            ("client_type", &self.client_type),
            ("last_finch_request_id", &self.last_finch_request_id),
        ] {
            if let Some(v) = v {
                item.insert(k.into(), s(v.clone()));
            }
        }
        item
    }

    fn from_item(item: &Item) -> Result<Self, Error> {
        let token = match (opt_s(item, "token_ciphertext"), opt_s(item, "token_key_id")) {
            (Some(ct), Some(key_id)) => Some(EncryptedToken {
                ciphertext: STANDARD
                    .decode(ct)
                    .map_err(|e| Error::internal_from("stored token_ciphertext is not base64", e))?,
                key_id,
            }),
            _ => None,
        };
        Ok(Self {
            connection_id: ConnectionId::parse(get_s(item, "connection_id")?)?,
            customer: CustomerId::parse(get_s(item, "customer_id")?)?,
            finch_customer_id: FinchCustomerId::parse(get_s(item, "finch_customer_id")?)?,
            provider_id: get_s(item, "provider_id")?.to_owned(),
            company_name: opt_s(item, "company_name"),
            status: ConnectionStatus::from(get_s(item, "status")?),
            status_message: opt_s(item, "status_message"),
            last_successful_sync: opt_s(item, "last_successful_sync"),
            products: get_list(item, "products"),
            entity_ids: get_list(item, "entity_ids"),
            client_type: opt_s(item, "client_type"),
            created_at: get_ts(item, "created_at")?,
            updated_at: get_ts(item, "updated_at")?,
            last_finch_request_id: opt_s(item, "last_finch_request_id"),
            version: u64::try_from(get_n(item, "version")?).map_err(|e| Error::internal_from("negative version", e))?,
            status_observed_at: opt_ts(item, "status_observed_at")?,
            checked_at: opt_ts(item, "checked_at")?,
            disconnected_at: opt_ts(item, "disconnected_at")?,
            token,
        })
    }
}

impl ConnectionSummary {
    fn from_item(item: &Item) -> Result<Self, Error> {
        Ok(Self {
            connection_id: ConnectionId::parse(get_s(item, "connection_id")?)?,
            provider_id: get_s(item, "provider_id")?.to_owned(),
            company_name: opt_s(item, "company_name"),
            status: ConnectionStatus::from(get_s(item, "status")?),
            products: get_list(item, "products"),
            entity_ids: get_list(item, "entity_ids"),
            finch_customer_id: FinchCustomerId::parse(get_s(item, "finch_customer_id")?)?,
            created_at: get_ts(item, "created_at")?,
            updated_at: get_ts(item, "updated_at")?,
            checked_at: opt_ts(item, "checked_at")?,
        })
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Claims a Finch `customer_id` for `customer`. `Ok(true)` if it is (now or already) the
    /// customer's, `Ok(false)` if another customer holds it.
    pub async fn claim_finch_customer(
        &self,
        id: &FinchCustomerId,
        customer: &CustomerId,
        slot: u32,
    ) -> Result<bool, Error> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("pk".into(), s(format!("FCUST#{id}"))),
                ("kind".into(), s("finch_customer")),
                ("owner".into(), s(customer.as_str())),
                ("slot".into(), n(slot)),
                ("created_at".into(), ts(OffsetDateTime::now_utc())),
            ])))
            .condition_expression("attribute_not_exists(pk) OR #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(customer.as_str()))
            .send()
            .await;
        conditional("PutItem", res)
    }

    /// The customer a Finch `customer_id` was claimed by, if any.
    pub async fn finch_customer_owner(&self, id: &str) -> Result<Option<CustomerId>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("FCUST#{id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem", e))?;
        out.item.map(|i| get_s(&i, "owner").and_then(|o| Ok(CustomerId::parse(o)?))).transpose()
    }

    /// Stores a pending flow under its state id.
    pub async fn put_state(&self, state_id: &str, flow: &PendingFlow) -> Result<(), Error> {
        let mut item: Item = HashMap::from([
            ("pk".into(), s(format!("STATE#{state_id}"))),
            ("kind".into(), s("state")),
            ("customer_id".into(), s(flow.customer.as_str())),
            ("finch_customer_id".into(), s(flow.finch_customer_id.as_str())),
            ("session_id".into(), s(flow.session_id.clone())),
            (
                "mode".into(),
                s(match flow.mode {
                    FlowMode::Redirect => "redirect",
                    FlowMode::Embedded => "embedded",
                }),
            ),
            ("expires_at".into(), n(flow.expires_at.unix_timestamp())),
        ]);
        if let Some(c) = &flow.reauth_of {
            item.insert("reauth_of".into(), s(c.as_str()));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| ddb_err("PutItem", e))?;
        Ok(())
    }

    /// Consumes a state: returns its flow exactly once, and never after it expired. With
    /// `owner`, a state of another customer is left untouched (and reported as absent).
    pub async fn take_state(
        &self,
        state_id: &str,
        now: OffsetDateTime,
        owner: Option<&CustomerId>,
    ) -> Result<Option<PendingFlow>, Error> {
        // TTL deletion is lazy: an expired item may still be there.
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("STATE#{state_id}")))
            .condition_expression("attribute_exists(pk) AND expires_at > :now")
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            .return_values(ReturnValue::AllOld);
        if let Some(o) = owner {
            req = req
                .condition_expression("attribute_exists(pk) AND expires_at > :now AND customer_id = :owner")
                .expression_attribute_values(":owner", s(o.as_str()));
        }
        let res = req.send().await;
        let item = match res {
            Ok(out) => out.attributes.ok_or_else(|| Error::internal("DeleteItem ALL_OLD returned nothing"))?,
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                return Ok(None);
            }
            Err(e) => return Err(ddb_err("DeleteItem", e)),
        };
        let mode = match get_s(&item, "mode")? {
            "redirect" => FlowMode::Redirect,
            _ => FlowMode::Embedded,
        };
        Ok(Some(PendingFlow {
            customer: CustomerId::parse(get_s(&item, "customer_id")?)?,
            finch_customer_id: FinchCustomerId::parse(get_s(&item, "finch_customer_id")?)?,
            session_id: get_s(&item, "session_id")?.to_owned(),
            mode,
            reauth_of: opt_s(&item, "reauth_of").map(ConnectionId::parse).transpose()?,
            expires_at: OffsetDateTime::from_unix_timestamp(get_n(&item, "expires_at")?)
                .map_err(|e| Error::internal_from("stored expires_at out of range", e))?,
        }))
    }

    /// Marks a code exchange as started, unless this code was seen before.
    pub async fn begin_exchange(
        &self,
        code_hash: &str,
        customer: &CustomerId,
        now: OffsetDateTime,
    ) -> Result<ExchangeStart, Error> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("pk".into(), s(format!("CODE#{code_hash}"))),
                ("kind".into(), s("code")),
                ("customer_id".into(), s(customer.as_str())),
                ("phase".into(), s("exchanging")),
                ("expires_at".into(), n(now.unix_timestamp() + CODE_MARKER_TTL_SECS)),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(ExchangeStart::Started),
            Err(e) => {
                let old = e.as_service_error().filter(|x| x.is_conditional_check_failed_exception()).map(|x| match x {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        c.item.clone()
                    }
                    _ => None,
                });
                match old {
                    None => Err(ddb_err("PutItem", e)),
                    Some(item) => {
                        let item = item.unwrap_or_default();
                        match (
                            opt_s(&item, "phase").as_deref(),
                            opt_s(&item, "connection_id"),
                            opt_s(&item, "customer_id"),
                        ) {
                            (Some("done"), Some(c), Some(cust)) => Ok(ExchangeStart::Done {
                                customer: CustomerId::parse(cust)?,
                                connection_id: ConnectionId::parse(c)?,
                            }),
                            _ => Ok(ExchangeStart::InProgress),
                        }
                    }
                }
            }
        }
    }

    /// Forgets a started exchange whose request provably never reached Finch, so the same
    /// code can be tried again.
    pub async fn abandon_exchange(&self, code_hash: &str) -> Result<(), Error> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("CODE#{code_hash}")))
            .condition_expression("phase = :p")
            .expression_attribute_values(":p", s("exchanging"))
            .send()
            .await;
        // Already gone or already done: either way nothing is left to abandon.
        conditional("DeleteItem", res).map(|_| ())
    }

    /// Reads a connection (strongly consistent).
    pub async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(conn_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb_err("GetItem", e))?;
        out.item.as_ref().map(ConnectionRecord::from_item).transpose()
    }

    /// Creates the connection, or — when it exists for the same customer at `expected_version`
    /// — replaces it (a reauthentication's new token), marking the code exchange done in the
    /// same transaction. The old ciphertext is overwritten only when the whole write commits.
    ///
    /// `expected_version` is `None` to create. A lost race is a `Conflict` the caller re-reads.
    pub async fn save_connection(
        &self,
        record: &ConnectionRecord,
        expected_version: Option<u64>,
        code_hash: Option<&str>,
    ) -> Result<SaveOutcome, Error> {
        let outcome = if expected_version.is_none() { SaveOutcome::Created } else { SaveOutcome::Replaced };
        let lost =
            || Error::conflict("connection_changed", "The connection changed while it was being saved; try again.");
        let Some(h) = code_hash else {
            // One item: a conditional put does it at half a transaction's write cost.
            let mut put = self.client.put_item().table_name(&self.table).set_item(Some(record.to_item()));
            put = match expected_version {
                None => put.condition_expression("attribute_not_exists(pk)"),
                Some(v) => put
                    .condition_expression("#version = :expected AND customer_id = :customer")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":expected", n(v))
                    .expression_attribute_values(":customer", s(record.customer.as_str())),
            };
            return match put.send().await {
                Ok(_) => Ok(outcome),
                Err(e) if is_ccf(&e) => Err(lost()),
                Err(e) => Err(ddb_err("PutItem", e)),
            };
        };
        let mut put = Put::builder().table_name(&self.table).set_item(Some(record.to_item()));
        put = match expected_version {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("#version = :expected AND customer_id = :customer")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(v))
                .expression_attribute_values(":customer", s(record.customer.as_str())),
        };
        let mut items = vec![TransactWriteItem::builder().put(put.build().map_err(build_err)?).build()];
        {
            let upd = Update::builder()
                .table_name(&self.table)
                .key("pk", s(format!("CODE#{h}")))
                .update_expression("SET phase = :done, connection_id = :c")
                .condition_expression("attribute_exists(pk) AND customer_id = :customer")
                .expression_attribute_values(":done", s("done"))
                .expression_attribute_values(":c", s(record.connection_id.as_str()))
                .expression_attribute_values(":customer", s(record.customer.as_str()))
                .build()
                .map_err(build_err)?;
            items.push(TransactWriteItem::builder().update(upd).build());
        }
        let res = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match res {
            Ok(_) => Ok(outcome),
            Err(e) => {
                let lost_race = e.as_service_error().is_some_and(|x| {
                    matches!(x, aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t)
                        if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed")))
                });
                if lost_race { Err(lost()) } else { Err(ddb_err("TransactWriteItems", e)) }
            }
        }
    }

    /// One page of a customer's connections, oldest first, from the `by_customer` index.
    pub async fn list_connections(
        &self,
        customer: &CustomerId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page, Error> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX_BY_CUSTOMER)
            .key_condition_expression("gsi1pk = :c")
            .expression_attribute_values(":c", s(cust_pk(customer)))
            .limit(limit);
        if let Some(c) = cursor {
            q = q.set_exclusive_start_key(Some(decode_cursor(customer, c)?));
        }
        let out = q.send().await.map_err(|e| ddb_err("Query", e))?;
        let items = out.items().iter().map(ConnectionSummary::from_item).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = out.last_evaluated_key.as_ref().map(encode_cursor).transpose()?;
        Ok(Page { items, next_cursor })
    }

    /// An UpdateItem on a connection. Every write to a connection bumps its `version`, so the
    /// `#version` name and the `:one` increment come with it.
    fn update_connection(
        &self,
        id: &ConnectionId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(conn_pk(id)))
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", n(1))
    }

    /// Records a status check, unless the connection changed since it was read at
    /// `expected_version` (a webhook, a reauthentication or a disconnect got there first: their
    /// data is newer). `Ok(false)` when the write was refused for that reason.
    pub async fn record_check(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        obs: &Observation,
    ) -> Result<bool, Error> {
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
            .expression_attribute_values(":disconnecting", s(DISCONNECTING));
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
        for (attr, value) in [("products", &obs.products), ("entity_ids", &obs.entity_ids)] {
            if let Some(v) = value {
                set.push(format!("{attr} = :{attr}"));
                req = req.expression_attribute_values(format!(":{attr}"), list(v));
            }
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        conditional("UpdateItem", req.update_expression(expr).send().await)
    }

    /// Applies a status Finch pushed (webhook) if it is newer than what is stored. Returns the
    /// record as it was before, or `None` when the connection is unknown, gone, or newer.
    pub async fn apply_pushed_status(
        &self,
        id: &ConnectionId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
        event_id: &str,
    ) -> Result<Option<ConnectionRecord>, Error> {
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
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":observed", ts(observed_at))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()))
            .expression_attribute_values(":event", s(event_id))
            // Finch timestamps are whole seconds: an event wins over anything observed within
            // its own second (it reports a change; an introspection that second may predate it).
            .expression_attribute_values(":second_end", ts(observed_at + time::Duration::seconds(1)))
            .expression_attribute_values(":connection", s("connection"))
            .expression_attribute_values(":disconnecting", s(DISCONNECTING))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| Error::internal("UpdateItem ALL_OLD returned nothing"))?;
                Ok(Some(ConnectionRecord::from_item(&item)?))
            }
            Err(e) if is_ccf(&e) => Ok(None),
            Err(e) => Err(ddb_err("UpdateItem", e)),
        }
    }

    /// Remembers a webhook event id; `Ok(false)` if it was seen before (a redelivery).
    pub async fn mark_event(&self, event_id: &str, ttl_secs: i64) -> Result<bool, Error> {
        let now = OffsetDateTime::now_utc();
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                ("pk".into(), s(format!("EVENT#{event_id}"))),
                ("kind".into(), s("event")),
                ("received_at".into(), ts(now)),
                ("expires_at".into(), n(now.unix_timestamp() + ttl_secs)),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional("PutItem", res)
    }

    /// Forgets an event id, so that Finch's redelivery is processed (after a failure).
    pub async fn unmark_event(&self, event_id: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("EVENT#{event_id}")))
            .send()
            .await
            .map_err(|e| ddb_err("DeleteItem", e))?;
        Ok(())
    }

    /// First step of a disconnect: marks the connection `disconnecting` (from `expected_version`).
    /// `Ok(false)` if it changed meanwhile.
    pub async fn mark_disconnecting(&self, id: &ConnectionId, expected_version: u64) -> Result<bool, Error> {
        let res = self
            .update_connection(id)
            .update_expression("SET #status = :disconnecting, updated_at = :now, #version = #version + :one")
            .condition_expression("#version = :expected")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnecting", s(DISCONNECTING))
            .expression_attribute_values(":now", ts(OffsetDateTime::now_utc()))
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        conditional("UpdateItem", res)
    }

    /// Last step of a disconnect: destroys the ciphertext and leaves a tombstone (id, customer,
    /// provider, times, last Finch-Request-Id) outside the customer's listing. `Ok(false)` if
    /// the connection is not `disconnecting` (another call finished first).
    pub async fn tombstone(&self, id: &ConnectionId, request_id: Option<&str>) -> Result<bool, Error> {
        let now = OffsetDateTime::now_utc();
        let mut req = self
            .update_connection(id)
            .condition_expression("#status = :disconnecting")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":disconnecting", s(DISCONNECTING))
            .expression_attribute_values(":disconnected", s("disconnected"))
            .expression_attribute_values(":now", ts(now));
        let set = match request_id {
            Some(r) => {
                req = req.expression_attribute_values(":rid", s(r));
                "SET #status = :disconnected, disconnected_at = :now, updated_at = :now, #version = #version + :one, last_finch_request_id = :rid"
            }
            None => {
                "SET #status = :disconnected, disconnected_at = :now, updated_at = :now, #version = #version + :one"
            }
        };
        let res =
            req.update_expression(format!("{set} REMOVE token_ciphertext, token_key_id, gsi1pk, gsi1sk")).send().await;
        conditional("UpdateItem", res)
    }

    /// Replaces a connection's ciphertext (a key migration) at `expected_version`.
    /// `Ok(false)` if the connection changed meanwhile or has no token any more.
    pub async fn replace_token(
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

    /// One page of every connection that still holds a ciphertext under a key other than `key_arn`.
    pub async fn scan_tokens_not_under(
        &self,
        key_arn: &str,
        start: Option<&str>,
        limit: i32,
    ) -> Result<ScanPage, Error> {
        let mut q = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(limit)
            .filter_expression("#kind = :connection AND attribute_exists(token_ciphertext) AND token_key_id <> :key")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":connection", s("connection"))
            .expression_attribute_values(":key", s(key_arn));
        if let Some(pk) = start {
            q = q.exclusive_start_key("pk", s(pk));
        }
        scan_page(q.send().await.map_err(|e| ddb_err("Scan", e))?)
    }

    /// One page of one parallel-scan segment: live connections not checked since `cutoff`.
    /// Memory is bounded by `limit`, whatever the table size.
    pub async fn scan_due(
        &self,
        segment: i32,
        total_segments: i32,
        start: Option<&str>,
        limit: i32,
        cutoff: OffsetDateTime,
    ) -> Result<ScanPage, Error> {
        let mut q = self
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
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":connection", s("connection"))
            .expression_attribute_values(":disconnecting", s(DISCONNECTING))
            // Revoked at Finch: nothing to learn until the app disconnects it here.
            .expression_attribute_values(":disconnected", s("disconnected"))
            .expression_attribute_values(":cutoff", ts(cutoff));
        if let Some(pk) = start {
            q = q.exclusive_start_key("pk", s(pk));
        }
        scan_page(q.send().await.map_err(|e| ddb_err("Scan", e))?)
    }
}

/// One page of a scan segment.
#[derive(Debug)]
pub struct ScanPage {
    pub items: Vec<ConnectionRecord>,
    /// Where the segment continues (`pk` of the last item read), if it does.
    pub next: Option<String>,
    /// Items read, before the filter.
    pub scanned: i32,
}

/// A cursor names only the position (sort key and connection id); the partition is always the
/// caller's own, so a cursor cannot be pointed at another customer's connections.
fn encode_cursor(key: &Item) -> Result<String, Error> {
    let sk = get_s(key, "gsi1sk")?;
    let pk = get_s(key, "pk")?;
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
    if !pk.starts_with("CONN#") || sk.is_empty() {
        return Err(bad());
    }
    Ok(HashMap::from([("gsi1pk".into(), s(cust_pk(customer))), ("gsi1sk".into(), s(sk)), ("pk".into(), s(pk))]))
}
