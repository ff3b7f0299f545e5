//! Pending Connect flows (`STATE#`): written once, consumed once (by the flow type that issued
//! them), expiring with their Finch session.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use time::OffsetDateTime;

use super::item::{Item, get_n, get_s, n, opt_s, s};
use super::keys::{self, KIND, PK, TTL, kind};
use super::{DynamoStore, is_condition_failure};
use crate::domain::{ConnectionId, CustomerId, Error, FinchCustomerId, FlowMode, SessionId, StateId};
use crate::store::{ConsumeState, IssueState, PendingFlow};

#[async_trait]
impl IssueState for DynamoStore {
    async fn put_state(&self, state: &StateId, flow: &PendingFlow) -> Result<(), Error> {
        let mut item: Item = HashMap::from([
            (PK.into(), s(keys::state(state))),
            (KIND.into(), s(kind::STATE)),
            ("customer_id".into(), s(flow.customer.as_str())),
            ("finch_customer_id".into(), s(flow.finch_customer_id.as_str())),
            ("session_id".into(), s(flow.session_id.as_str())),
            ("mode".into(), s(flow.mode.as_str())),
            (TTL.into(), n(flow.expires_at.unix_timestamp())),
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
            .map_err(crate::aws::error("dynamodb", "PutItem"))?;
        Ok(())
    }
}

#[async_trait]
impl ConsumeState for DynamoStore {
    async fn take_state(
        &self,
        state: &StateId,
        now: OffsetDateTime,
        mode: FlowMode,
        owner: Option<&CustomerId>,
    ) -> Result<Option<PendingFlow>, Error> {
        // TTL deletion is lazy: an expired item may still be there.
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(keys::state(state)))
            .condition_expression("attribute_exists(pk) AND #ttl > :now AND #mode = :mode")
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#mode", "mode")
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            .expression_attribute_values(":mode", s(mode.as_str()))
            .return_values(ReturnValue::AllOld);
        if let Some(o) = owner {
            req = req
                .condition_expression("attribute_exists(pk) AND #ttl > :now AND #mode = :mode AND customer_id = :owner")
                .expression_attribute_values(":owner", s(o.as_str()));
        }
        let item = match req.send().await {
            Ok(out) => out.attributes.ok_or_else(|| Error::internal("DeleteItem ALL_OLD returned nothing"))?,
            Err(e) if is_condition_failure(&e) => return Ok(None),
            Err(e) => return Err(crate::aws::error("dynamodb", "DeleteItem")(e)),
        };
        flow_from_item(&item).map(Some)
    }
}

fn flow_from_item(item: &Item) -> Result<PendingFlow, Error> {
    let mode = get_s(item, "mode")?;
    Ok(PendingFlow {
        customer: CustomerId::parse(get_s(item, "customer_id")?)?,
        finch_customer_id: FinchCustomerId::parse(get_s(item, "finch_customer_id")?)?,
        session_id: SessionId::parse(get_s(item, "session_id")?)?,
        mode: FlowMode::parse(mode).ok_or_else(|| Error::internal(format!("stored flow mode {mode:?} is unknown")))?,
        reauth_of: opt_s(item, "reauth_of").map(ConnectionId::parse).transpose()?,
        expires_at: OffsetDateTime::from_unix_timestamp(get_n(item, TTL)?)
            .map_err(|e| Error::internal_from("stored expires_at out of range", e))?,
    })
}
