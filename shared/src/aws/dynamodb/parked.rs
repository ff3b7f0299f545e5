//! Parked statuses (`PUSH#<connection_id>`): an `account.updated` that arrived while the
//! connection's first callback was between its exchange and its save, kept until that save.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::item::{get_s, n, s, ts};
use super::keys::{self, KIND, PK, TTL, kind};
use super::{DynamoStore, conditional};
use crate::domain::{ConnectionId, ConnectionStatus, Error, EventId};
use crate::store::{ParkStatus, ParkedStatus, TakeParkedStatus};

/// A callback in flight finishes within minutes; a parked status nobody took is dropped later.
const PARKED_TTL: time::Duration = time::Duration::hours(1);

#[async_trait]
impl ParkStatus for DynamoStore {
    async fn park_status(&self, id: &ConnectionId, parked: &ParkedStatus) -> Result<(), Error> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                (PK.into(), s(keys::parked(id))),
                (KIND.into(), s(kind::PARKED)),
                ("status".into(), s(parked.status.as_str())),
                ("observed_at".into(), ts(parked.observed_at)),
                ("event_id".into(), s(parked.event.as_str())),
                (TTL.into(), n((OffsetDateTime::now_utc() + PARKED_TTL).unix_timestamp())),
            ])))
            // Unordered deliveries: a later status parked first stays.
            .condition_expression("attribute_not_exists(pk) OR observed_at <= :observed")
            .expression_attribute_values(":observed", ts(parked.observed_at))
            .send()
            .await;
        conditional("PutItem", res).map(|_| ())
    }
}

#[async_trait]
impl TakeParkedStatus for DynamoStore {
    async fn take_parked_status(&self, id: &ConnectionId) -> Result<Option<ParkedStatus>, Error> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(keys::parked(id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "DeleteItem"))?;
        let Some(item) = out.attributes.filter(|i| !i.is_empty()) else { return Ok(None) };
        Ok(Some(ParkedStatus {
            status: ConnectionStatus::from(get_s(&item, "status")?),
            observed_at: OffsetDateTime::parse(get_s(&item, "observed_at")?, &Rfc3339)
                .map_err(|e| Error::internal_from("stored observed_at is not RFC 3339", e))?,
            event: EventId::parse(get_s(&item, "event_id")?)?,
        }))
    }
}
