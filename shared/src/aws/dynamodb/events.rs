//! Webhook event ids (`EVENT#`): a delivery handled once, remembered for a while.

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::item::{n, s, ts};
use super::keys::{self, KIND, PK, TTL, kind};
use super::{DynamoStore, conditional};
use crate::domain::{Error, EventId};
use crate::store::EventIds;

#[async_trait]
impl EventIds for DynamoStore {
    async fn mark_event(&self, id: &EventId, ttl: time::Duration) -> Result<bool, Error> {
        let now = OffsetDateTime::now_utc();
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(HashMap::from([
                (PK.into(), s(keys::event(id))),
                (KIND.into(), s(kind::EVENT)),
                ("received_at".into(), ts(now)),
                (TTL.into(), n((now + ttl).unix_timestamp())),
            ])))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional("PutItem", res)
    }

    async fn unmark_event(&self, id: &EventId) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(keys::event(id)))
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "DeleteItem"))?;
        Ok(())
    }
}
