//! Finch customer-id claims (`FCUST#`): which customer owns a Finch `customer_id`, forever.

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::item::{get_s, n, s, ts};
use super::keys::{self, KIND, PK, kind};
use super::{DynamoStore, conditional};
use crate::domain::{CustomerId, Error, FinchCustomerId};
use crate::store::{ClaimFinchCustomer, FinchCustomerOwner};

#[async_trait]
impl ClaimFinchCustomer for DynamoStore {
    async fn claim_finch_customer(
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
                (PK.into(), s(keys::finch_customer(id))),
                (KIND.into(), s(kind::FINCH_CUSTOMER)),
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
}

#[async_trait]
impl FinchCustomerOwner for DynamoStore {
    async fn finch_customer_owner(&self, id: &FinchCustomerId) -> Result<Option<CustomerId>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::finch_customer(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(crate::aws::error("dynamodb", "GetItem"))?;
        out.item.map(|i| get_s(&i, "owner").and_then(|o| Ok(CustomerId::parse(o)?))).transpose()
    }
}
