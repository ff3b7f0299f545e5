//! Items ↔ records: attribute values in and out, and the conversions of connections. This is
//! the only place that knows how a record is laid out in DynamoDB.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::keys::{self, GSI1PK, GSI1SK, KIND, PK, kind};
use crate::crypto::EncryptedToken;
use crate::domain::{
    ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId, Error, FinchCustomerId, Product,
};
use crate::store::{ConnectionRecord, ConnectionSummary, Employer, EntityRecord};

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn products(v: &[Product]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|p| s(p.as_str())).collect())
}

/// One entity as a map value: its attributes, with `order` keeping Finch's order in a map
/// that has none (a map, so that one entity's status is one `SET entities.#e.status`).
pub fn entity(e: &EntityRecord, order: usize) -> AttributeValue {
    let mut m = HashMap::from([("status".to_owned(), s(e.status.as_str())), ("order".to_owned(), n(order))]);
    for (k, v) in [("name", &e.name), ("source_id", &e.source_id)] {
        if let Some(v) = v {
            m.insert(k.to_owned(), s(v.clone()));
        }
    }
    for (k, v) in [("observed_at", e.observed_at), ("disconnected_at", e.disconnected_at)] {
        if let Some(t) = v {
            m.insert(k.to_owned(), ts(t));
        }
    }
    AttributeValue::M(m)
}

pub fn entities(v: &[EntityRecord]) -> AttributeValue {
    AttributeValue::M(v.iter().enumerate().map(|(i, e)| (e.id.to_string(), entity(e, i))).collect())
}

fn get_entities(item: &Item) -> Result<Vec<EntityRecord>, Error> {
    let Some(v) = item.get("entities") else { return Ok(Vec::new()) };
    let m = v.as_m().map_err(|_| Error::internal("stored entities is not a map"))?;
    let mut out = Vec::with_capacity(m.len());
    for (id, v) in m {
        let e = v.as_m().map_err(|_| Error::internal("stored entity is not a map"))?;
        let order = get_n(e, "order").unwrap_or(i64::MAX);
        out.push((
            order,
            EntityRecord {
                id: EntityId::parse(id.clone())?,
                name: opt_s(e, "name"),
                source_id: opt_s(e, "source_id"),
                status: ConnectionStatus::from(get_s(e, "status")?),
                observed_at: opt_ts(e, "observed_at")?,
                disconnected_at: opt_ts(e, "disconnected_at")?,
            },
        ));
    }
    out.sort_by(|a, b| (a.0, a.1.id.as_str()).cmp(&(b.0, b.1.id.as_str())));
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

fn get_employer(item: &Item) -> Employer {
    Employer {
        company_id: opt_s(item, "company_id"),
        legal_name: opt_s(item, "legal_name"),
        customer_name: opt_s(item, "customer_name"),
        customer_email: opt_s(item, "customer_email"),
        connection_type: opt_s(item, "connection_type"),
        authentication_method: opt_s(item, "authentication_method"),
    }
}

/// The employer's attributes, those known.
pub fn employer_attributes(e: &Employer) -> [(&'static str, &Option<String>); 6] {
    [
        ("company_id", &e.company_id),
        ("legal_name", &e.legal_name),
        ("customer_name", &e.customer_name),
        ("customer_email", &e.customer_email),
        ("connection_type", &e.connection_type),
        ("authentication_method", &e.authentication_method),
    ]
}

/// Timestamps are stored as fixed-width RFC 3339 (UTC, microseconds), so DynamoDB's string
/// comparison orders them in time — the webhook's "only if newer" condition relies on it.
/// Written from the components, so there is no formatting failure to default away.
pub fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub fn ts(t: OffsetDateTime) -> AttributeValue {
    s(stamp(t))
}

pub fn get_s<'a>(item: &'a Item, k: &str) -> Result<&'a str, Error> {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| Error::internal(format!("stored item lacks string attribute {k}")))
}

pub fn opt_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub fn get_n(item: &Item, k: &str) -> Result<i64, Error> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::internal(format!("stored item lacks number attribute {k}")))
}

/// A list of strings; an absent attribute is an empty list (Perch writes every list, but an
/// empty list is what it would have written).
fn get_list(item: &Item, k: &str) -> Result<Vec<String>, Error> {
    match item.get(k) {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_l()
            .map_err(|_| Error::internal(format!("stored {k} is not a list")))?
            .iter()
            .map(|x| x.as_s().cloned().map_err(|_| Error::internal(format!("stored {k} holds a non-string"))))
            .collect(),
    }
}

fn get_ts(item: &Item, k: &str) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::parse(get_s(item, k)?, &Rfc3339)
        .map_err(|e| Error::internal_from(format!("stored {k} is not RFC 3339"), e))
}

fn opt_ts(item: &Item, k: &str) -> Result<Option<OffsetDateTime>, Error> {
    if item.contains_key(k) { get_ts(item, k).map(Some) } else { Ok(None) }
}

fn get_products(item: &Item) -> Result<Vec<Product>, Error> {
    Ok(get_list(item, "products")?.iter().map(|p| Product::from(p.as_str())).collect())
}

/// A connection's sort key in the `by_customer` index: by creation time, then id.
pub fn sort_key(created_at: OffsetDateTime, id: &ConnectionId) -> String {
    format!("{}#{id}", stamp(created_at))
}

impl ConnectionRecord {
    pub(super) fn to_item(&self) -> Item {
        let mut item: Item = HashMap::from([
            (PK.into(), s(keys::connection(&self.connection_id))),
            (KIND.into(), s(kind::CONNECTION)),
            ("connection_id".into(), s(self.connection_id.as_str())),
            ("customer_id".into(), s(self.customer.as_str())),
            ("finch_customer_id".into(), s(self.finch_customer_id.as_str())),
            ("provider_id".into(), s(self.provider_id.clone())),
            ("status".into(), s(self.status.as_str())),
            ("products".into(), products(&self.products)),
            ("entities".into(), entities(&self.entities)),
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
            item.insert(GSI1PK.into(), s(keys::customer(&self.customer)));
            item.insert(GSI1SK.into(), s(sort_key(self.created_at, &self.connection_id)));
        }
        for (k, v) in [
            ("status_observed_at", self.status_observed_at),
            ("checked_at", self.checked_at),
            ("disconnected_at", self.disconnected_at),
            ("disconnect_lease", self.disconnect_lease),
            ("refresh_requested_at", self.refresh_requested_at),
        ] {
            if let Some(t) = v {
                item.insert(k.into(), ts(t));
            }
        }
        for (k, v) in employer_attributes(&self.employer).into_iter().chain([
            ("employer_key", &self.employer_key),
            ("status_message", &self.status_message),
            ("last_successful_sync", &self.last_successful_sync),
            ("client_type", &self.client_type),
            ("last_finch_request_id", &self.last_finch_request_id),
        ]) {
            if let Some(v) = v {
                item.insert(k.into(), s(v.clone()));
            }
        }
        item
    }

    pub(super) fn from_item(item: &Item) -> Result<Self, Error> {
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
            employer: get_employer(item),
            entities: get_entities(item)?,
            employer_key: opt_s(item, "employer_key"),
            refresh_requested_at: opt_ts(item, "refresh_requested_at")?,
            status: ConnectionState::parse(get_s(item, "status")?),
            status_message: opt_s(item, "status_message"),
            last_successful_sync: opt_s(item, "last_successful_sync"),
            products: get_products(item)?,
            client_type: opt_s(item, "client_type"),
            created_at: get_ts(item, "created_at")?,
            updated_at: get_ts(item, "updated_at")?,
            last_finch_request_id: opt_s(item, "last_finch_request_id"),
            version: u64::try_from(get_n(item, "version")?).map_err(|e| Error::internal_from("negative version", e))?,
            status_observed_at: opt_ts(item, "status_observed_at")?,
            checked_at: opt_ts(item, "checked_at")?,
            disconnected_at: opt_ts(item, "disconnected_at")?,
            disconnect_lease: opt_ts(item, "disconnect_lease")?,
            token,
        })
    }
}

impl ConnectionSummary {
    /// From the index's projection ([`super::keys::LISTING_ATTRIBUTES`]): the same view as
    /// [`ConnectionRecord::summary`], built from the attributes it reads.
    pub(super) fn from_item(item: &Item) -> Result<Self, Error> {
        let employer = get_employer(item);
        let status = ConnectionState::parse(get_s(item, "status")?);
        let entities = get_entities(item)?;
        Ok(Self::of(
            ConnectionId::parse(get_s(item, "connection_id")?)?,
            get_s(item, "provider_id")?.to_owned(),
            employer,
            status,
            get_products(item)?,
            &entities,
            opt_s(item, "client_type"),
            FinchCustomerId::parse(get_s(item, "finch_customer_id")?)?,
            (get_ts(item, "created_at")?, get_ts(item, "updated_at")?, opt_ts(item, "checked_at")?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_fixed_width_rfc3339_in_utc_and_sort_in_time() {
        let t = OffsetDateTime::parse("2026-11-23T20:42:15.5211629+01:00", &Rfc3339).unwrap();
        assert_eq!(stamp(t), "2026-11-23T19:42:15.521162Z");
        assert_eq!(stamp(OffsetDateTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let later = t + time::Duration::microseconds(1);
        assert!(stamp(later) > stamp(t));
        assert_eq!(OffsetDateTime::parse(&stamp(t), &Rfc3339).unwrap(), t.replace_nanosecond(521_162_000).unwrap());
    }
}
