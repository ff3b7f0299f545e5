//! Code exchanges (`CODE#<keyed hash>`): started once, then done (by the connection's save, in
//! the same transaction) or abandoned when the request provably never reached Finch.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{ReturnValuesOnConditionCheckFailure, Update};
use time::OffsetDateTime;

use super::item::{Item, n, opt_s, s};
use super::keys::{self, KIND, PK, TTL, kind};
use super::{DynamoStore, conditional};
use crate::domain::{CodeHash, ConnectionId, CustomerId, Error};
use crate::store::{CodeExchanges, ExchangeStart};

/// How long a code-exchange marker is kept: codes live 10 minutes, replays come later.
const MARKER_TTL: time::Duration = time::Duration::hours(1);

const EXCHANGING: &str = "exchanging";
const DONE: &str = "done";

#[async_trait]
impl CodeExchanges for DynamoStore {
    async fn begin_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        now: OffsetDateTime,
    ) -> Result<ExchangeStart, Error> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                (PK.into(), s(keys::code(code))),
                (KIND.into(), s(kind::CODE)),
                ("customer_id".into(), s(customer.as_str())),
                ("phase".into(), s(EXCHANGING)),
                (TTL.into(), n((now + MARKER_TTL).unix_timestamp())),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let e = match res {
            Ok(_) => return Ok(ExchangeStart::Started),
            Err(e) => e,
        };
        match e.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(c)) => seen_before(c.item.as_ref()),
            _ => Err(crate::aws::error("dynamodb", "PutItem")(e)),
        }
    }

    async fn abandon_exchange(&self, code: &CodeHash) -> Result<(), Error> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(keys::code(code)))
            .condition_expression("phase = :p")
            .expression_attribute_values(":p", s(EXCHANGING))
            .send()
            .await;
        // Already gone or already done: either way nothing is left to abandon.
        conditional("DeleteItem", res).map(|_| ())
    }

    async fn finish_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        connection: &ConnectionId,
    ) -> Result<(), Error> {
        // The transaction half's write, on its own.
        let done = mark_done(&self.table, code, connection, customer)?;
        let res = self
            .client
            .update_item()
            .table_name(done.table_name())
            .set_key(Some(done.key().clone()))
            .update_expression(done.update_expression())
            .set_condition_expression(done.condition_expression().map(str::to_owned))
            .set_expression_attribute_values(done.expression_attribute_values().cloned())
            .send()
            .await;
        conditional("UpdateItem", res).map(|_| ())
    }
}

/// What the marker a code already has says: done (into which connection, for whom), or still
/// being exchanged. A marker the service did not return is treated as in progress: the safe
/// answer, which never exchanges a code twice.
fn seen_before(old: Option<&Item>) -> Result<ExchangeStart, Error> {
    let Some(item) = old else { return Ok(ExchangeStart::InProgress) };
    match (opt_s(item, "phase").as_deref(), opt_s(item, "connection_id"), opt_s(item, "customer_id")) {
        (Some(DONE), Some(c), Some(cust)) => {
            Ok(ExchangeStart::Done { customer: CustomerId::parse(cust)?, connection_id: ConnectionId::parse(c)? })
        }
        _ => Ok(ExchangeStart::InProgress),
    }
}

/// The transaction half that finishes an exchange: the marker names the connection it became
/// and the customer it belongs to — the one whose Finch id it is filed under, which is not the
/// one who started the exchange when a foreign state carried the code (see the callback).
pub(super) fn mark_done(
    table: &str,
    code: &CodeHash,
    connection: &ConnectionId,
    customer: &CustomerId,
) -> Result<Update, Error> {
    Update::builder()
        .table_name(table)
        .key(PK, s(keys::code(code)))
        .update_expression("SET phase = :done, connection_id = :c, customer_id = :customer")
        .condition_expression("phase = :exchanging")
        .expression_attribute_values(":exchanging", s(EXCHANGING))
        .expression_attribute_values(":done", s(DONE))
        .expression_attribute_values(":c", s(connection.as_str()))
        .expression_attribute_values(":customer", s(customer.as_str()))
        .build()
        .map_err(crate::aws::build_error)
}
