//! Finch's rate windows (`BUDGET#<window>`): one small item each, written conditionally on its
//! `version` (see [`crate::flows::budget`]). Several windows move together in one transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::item::{Item, n, s};
use super::keys::{self, KIND, PK, kind};
use super::{DynamoStore, conditional};
use crate::domain::Error;
use crate::store::{BudgetWindows, WindowLog};

fn to_item(name: &str, log: &WindowLog) -> Item {
    // `taken` as one flat list of numbers: second, count, second, count…
    let taken = log.taken.iter().flat_map(|(sec, c)| [n(sec), n(c)]).collect();
    let mut item = HashMap::from([
        (PK.into(), s(keys::budget(name))),
        (KIND.into(), s(kind::BUDGET)),
        ("version".into(), n(log.version)),
        ("taken".into(), AttributeValue::L(taken)),
    ]);
    if let Some(until) = log.blocked_until {
        item.insert("blocked_until".into(), n(until));
    }
    item
}

fn number<T: std::str::FromStr>(v: &AttributeValue) -> Result<T, Error> {
    v.as_n().ok().and_then(|x| x.parse().ok()).ok_or_else(|| Error::internal("a budget window holds a non-number"))
}

fn from_item(item: &Item) -> Result<WindowLog, Error> {
    let version = item.get("version").map(number).transpose()?.unwrap_or(0);
    let flat = match item.get("taken") {
        Some(AttributeValue::L(l)) => l.iter().map(number::<i64>).collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let taken = flat.chunks_exact(2).map(|p| (p[0], u32::try_from(p[1]).unwrap_or(u32::MAX))).collect();
    let blocked_until = item.get("blocked_until").map(number).transpose()?;
    Ok(WindowLog { version, taken, blocked_until })
}

impl DynamoStore {
    /// The put of a window at its next version, if still at the one it was read at.
    fn window_put(&self, name: &str, log: &WindowLog) -> Result<Put, Error> {
        let put = Put::builder().table_name(&self.table).set_item(Some(to_item(name, log)));
        let put = match log.version.checked_sub(1) {
            Some(0) | None => put.condition_expression("attribute_not_exists(pk)"),
            Some(read) => put.condition_expression("version = :read").expression_attribute_values(":read", n(read)),
        };
        put.build().map_err(|e| Error::internal_from("building a budget write", e))
    }
}

#[async_trait]
impl BudgetWindows for DynamoStore {
    async fn read_windows(&self, names: &[&str]) -> Result<Vec<WindowLog>, Error> {
        let reads = names.iter().map(|name| {
            self.client.get_item().table_name(&self.table).key(PK, s(keys::budget(name))).consistent_read(true).send()
        });
        let mut out = Vec::with_capacity(names.len());
        for got in futures_util::future::join_all(reads).await {
            let got = got.map_err(crate::aws::error("dynamodb", "GetItem"))?;
            out.push(got.item.as_ref().map(from_item).transpose()?.unwrap_or_default());
        }
        Ok(out)
    }

    async fn write_windows(&self, windows: &[(&str, &WindowLog)]) -> Result<bool, Error> {
        if let [(name, log)] = windows {
            let put = self.window_put(name, log)?;
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(put.item))
                .set_condition_expression(put.condition_expression)
                .set_expression_attribute_values(put.expression_attribute_values)
                .send()
                .await;
            return conditional("PutItem", res);
        }
        let items = windows
            .iter()
            .map(|(name, log)| Ok(TransactWriteItem::builder().put(self.window_put(name, log)?).build()))
            .collect::<Result<Vec<_>, Error>>()?;
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(t))
                    if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(false)
                }
                _ => Err(crate::aws::error("dynamodb", "TransactWriteItems")(e)),
            },
        }
    }
}
