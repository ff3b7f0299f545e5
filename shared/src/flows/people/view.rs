//! What the app reads of its people: `GET /people` (persons with their sources, a page at a
//! time) and `GET /people/{person_id}` (a person's records in each source and their pay across
//! connections), the caller's customer only; another customer's person is a 404.
//!
//! Names and pay come from the sources' own records, opened under each connection's data key:
//! the index holds none. A source whose connection is being disconnected is left out (its
//! data is being deleted, and the index follows).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::app::{Adapters, AppState};
use crate::domain::people::{Ambiguity, Link, Person};
use crate::domain::sync::{RecordKind, payment_id_of};
use crate::domain::{ConnectionId, CustomerId, EntityId, Error, PersonId};
use crate::flows::sync::view::{bad_cursor, data_key, open};
use crate::store::data::StoredRecord;
use crate::store::{ConnectionRecord, DataReadStore};

/// Most persons in one page of `GET /people`, and the default.
pub const MAX_PEOPLE: usize = 200;
pub const DEFAULT_PEOPLE: usize = 50;
/// Payments of one entity read for a person's pay (beyond Finch's lookback of ~3 years of
/// weekly pay).
const MAX_PAYMENTS: usize = 1_000;

/// A person as listed: their name (from a source's directory entry) and sources.
#[derive(Debug, Serialize)]
pub struct PersonSummary {
    pub person_id: PersonId,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub sources: Vec<Link>,
    pub ambiguities: Vec<Ambiguity>,
}

/// `GET /people`.
#[derive(Debug, Serialize)]
pub struct PeoplePage {
    pub people: Vec<PersonSummary>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

fn people_cursor(after: &PersonId) -> String {
    URL_SAFE_NO_PAD.encode(format!("n1:{after}"))
}

fn parse_people_cursor(c: &str) -> Result<PersonId, Error> {
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad_cursor())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad_cursor())?;
    let id = text.strip_prefix("n1:").ok_or_else(bad_cursor)?;
    PersonId::parse(id).map_err(|_| bad_cursor())
}

/// The caller's live connections among `ids`, by id.
async fn live_connections(
    store: &dyn DataReadStore,
    customer: &CustomerId,
    mut ids: Vec<ConnectionId>,
) -> Result<HashMap<ConnectionId, ConnectionRecord>, Error> {
    let mut out = HashMap::new();
    ids.sort();
    ids.dedup();
    for id in ids {
        if let Some(rec) = store.get_connection(&id).await?
            && rec.customer == *customer
            && !rec.is_disconnecting_or_gone()
        {
            out.insert(id, rec);
        }
    }
    Ok(out)
}

/// The records of `kind` for the sources given, per connection, opened: by (connection,
/// entity, individual id).
async fn source_records<A: Adapters>(
    app: &AppState<A>,
    live: &HashMap<ConnectionId, ConnectionRecord>,
    kind: RecordKind,
    sources: &[(ConnectionId, EntityId, String)],
) -> Result<HashMap<(ConnectionId, EntityId, String), Box<RawValue>>, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let mut by_connection: BTreeMap<&ConnectionId, Vec<(RecordKind, EntityId, String)>> = BTreeMap::new();
    for (c, e, i) in sources {
        if live.contains_key(c) {
            by_connection.entry(c).or_default().push((kind, e.clone(), i.clone()));
        }
    }
    let mut out = HashMap::new();
    for (c, wanted) in by_connection {
        let rec = &live[c];
        let Some(key) = data_key(app, rec).await? else { continue };
        for chunk in wanted.chunks(100) {
            for r in store.records(c, chunk).await? {
                out.insert((c.clone(), r.entity.clone(), r.id.clone()), open(&key, rec, &r)?);
            }
        }
    }
    Ok(out)
}

fn name_of(raw: &RawValue) -> (Option<String>, Option<String>) {
    let v: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    (s("first_name"), s("last_name"))
}

/// A page of the caller's people, in id order.
pub async fn people<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    cursor: Option<&str>,
    limit: usize,
) -> Result<PeoplePage, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let after = cursor.map(parse_people_cursor).transpose()?;
    let mut persons = store.persons_page(customer, after.as_ref(), limit + 1).await?;
    let has_more = persons.len() > limit;
    persons.truncate(limit);
    let next_cursor = has_more.then(|| persons.last().map(|p| people_cursor(&p.person_id))).flatten();
    let ids: Vec<ConnectionId> =
        persons.iter().flat_map(|p| p.sources.iter().map(|l| l.source.connection_id.clone())).collect();
    let live = live_connections(store, customer, ids).await?;
    // Each person's name, from the first source with a directory entry.
    let firsts: Vec<(ConnectionId, EntityId, String)> = persons
        .iter()
        .filter_map(|p| p.sources.iter().find(|l| live.contains_key(&l.source.connection_id)))
        .map(|l| (l.source.connection_id.clone(), l.source.entity_id.clone(), l.source.individual_id.clone()))
        .collect();
    let names = source_records(app, &live, RecordKind::Directory, &firsts).await?;
    let people = persons
        .into_iter()
        .map(|p| {
            let sources: Vec<Link> =
                p.sources.into_iter().filter(|l| live.contains_key(&l.source.connection_id)).collect();
            let (first_name, last_name) = sources
                .first()
                .and_then(|l| {
                    names.get(&(
                        l.source.connection_id.clone(),
                        l.source.entity_id.clone(),
                        l.source.individual_id.clone(),
                    ))
                })
                .map(|raw| name_of(raw))
                .unwrap_or_default();
            PersonSummary { person_id: p.person_id, first_name, last_name, sources, ambiguities: p.ambiguities }
        })
        // Someone known only through connections being disconnected is leaving the index.
        .filter(|p| !p.sources.is_empty())
        .collect();
    Ok(PeoplePage { people, next_cursor, has_more })
}

/// One source of a person, with its records as last synced.
#[derive(Debug, Serialize)]
pub struct SourceDetail {
    #[serde(flatten)]
    pub link: Link,
    pub directory: Option<Box<RawValue>>,
    pub individual: Option<Box<RawValue>>,
    pub employment: Option<Box<RawValue>>,
}

/// One pay statement of a person, with its payment's period.
#[derive(Debug, Serialize)]
pub struct PayLine {
    pub connection_id: ConnectionId,
    pub entity_id: EntityId,
    pub payment_id: String,
    pub pay_date: Option<String>,
    pub pay_period: Option<Value>,
    pub statement: Box<RawValue>,
}

/// Gross and net pay in one currency, over the statements that gave them.
#[derive(Debug, Default, Serialize)]
pub struct PayTotal {
    pub currency: String,
    pub gross_pay: i64,
    pub net_pay: i64,
    pub statements: u32,
    /// Statements in this currency whose gross or net amount Finch left empty (not counted).
    pub incomplete: u32,
}

/// `GET /people/{person_id}`.
#[derive(Debug, Serialize)]
pub struct PersonView {
    pub person_id: PersonId,
    pub sources: Vec<SourceDetail>,
    pub ambiguities: Vec<Ambiguity>,
    /// Newest first.
    pub pay: Vec<PayLine>,
    /// Per currency: a person paid in two currencies has two totals, never one sum.
    pub pay_totals: Vec<PayTotal>,
}

/// One of the caller's people, with their records and pay across connections.
pub async fn person<A: Adapters>(app: &AppState<A>, customer: &CustomerId, raw_id: &str) -> Result<PersonView, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let id = PersonId::parse(raw_id).map_err(|_| Error::NotFound("person"))?;
    let Some(p): Option<Person> = store.persons(customer, std::slice::from_ref(&id)).await?.into_iter().next() else {
        return Err(Error::NotFound("person"));
    };
    let ids: Vec<ConnectionId> = p.sources.iter().map(|l| l.source.connection_id.clone()).collect();
    let live = live_connections(store, customer, ids).await?;
    let links: Vec<Link> = p.sources.into_iter().filter(|l| live.contains_key(&l.source.connection_id)).collect();
    let keys: Vec<(ConnectionId, EntityId, String)> = links
        .iter()
        .map(|l| (l.source.connection_id.clone(), l.source.entity_id.clone(), l.source.individual_id.clone()))
        .collect();
    let mut directory = source_records(app, &live, RecordKind::Directory, &keys).await?;
    let mut individual = source_records(app, &live, RecordKind::Individual, &keys).await?;
    let mut employment = source_records(app, &live, RecordKind::Employment, &keys).await?;
    let mut pay = Vec::new();
    for (c, e, i) in &keys {
        pay.extend(pay_of(app, &live[c], e, i).await?);
    }
    pay.sort_by(|a, b| b.pay_date.cmp(&a.pay_date).then_with(|| a.payment_id.cmp(&b.payment_id)));
    let pay_totals = totals(&pay);
    let sources = links
        .into_iter()
        .zip(keys)
        .map(|(link, k)| SourceDetail {
            link,
            directory: directory.remove(&k),
            individual: individual.remove(&k),
            employment: employment.remove(&k),
        })
        .collect();
    Ok(PersonView { person_id: p.person_id, sources, ambiguities: p.ambiguities, pay, pay_totals })
}

/// One source's pay statements, each with its payment's date and period.
async fn pay_of<A: Adapters>(
    app: &AppState<A>,
    rec: &ConnectionRecord,
    entity: &EntityId,
    individual: &str,
) -> Result<Vec<PayLine>, Error> {
    let store: &dyn DataReadStore = app.store.as_ref();
    let payments =
        store.entity_records(&rec.connection_id, RecordKind::Payment, entity, "", None, MAX_PAYMENTS).await?;
    if payments.is_empty() {
        return Ok(Vec::new());
    }
    let Some(key) = data_key(app, rec).await? else { return Ok(Vec::new()) };
    let mut by_payment: HashMap<String, Value> = HashMap::new();
    let mut wanted = Vec::with_capacity(payments.len());
    for r in &payments {
        let payment = payment_id_of(&r.id).to_owned();
        let body: Value = serde_json::from_str(open(&key, rec, r)?.get()).unwrap_or(Value::Null);
        wanted.push((RecordKind::PayStatement, entity.clone(), format!("{payment}.{individual}")));
        by_payment.insert(payment, body);
    }
    let mut statements: Vec<StoredRecord> = Vec::new();
    for chunk in wanted.chunks(100) {
        statements.extend(store.records(&rec.connection_id, chunk).await?);
    }
    let mut out = Vec::with_capacity(statements.len());
    for r in statements {
        let payment = r.id.split('.').next().unwrap_or_default().to_owned();
        let body = by_payment.get(&payment);
        out.push(PayLine {
            connection_id: rec.connection_id.clone(),
            entity_id: entity.clone(),
            pay_date: body.and_then(|b| b.get("pay_date")).and_then(Value::as_str).map(str::to_owned),
            pay_period: body.and_then(|b| b.get("pay_period")).cloned(),
            statement: open(&key, rec, &r)?,
            payment_id: payment,
        });
    }
    Ok(out)
}

/// Gross and net per currency; amounts Finch left empty are counted apart, never as zero.
fn totals(pay: &[PayLine]) -> Vec<PayTotal> {
    let mut by: BTreeMap<String, PayTotal> = BTreeMap::new();
    for line in pay {
        let v: Value = serde_json::from_str(line.statement.get()).unwrap_or(Value::Null);
        let money = |k: &str| {
            let m = v.get(k)?;
            Some((
                m.get("currency").and_then(Value::as_str).map(str::to_lowercase),
                m.get("amount").and_then(Value::as_i64),
            ))
        };
        let (gross, net) = (money("gross_pay"), money("net_pay"));
        let currency = gross
            .as_ref()
            .and_then(|g| g.0.clone())
            .or_else(|| net.as_ref().and_then(|n| n.0.clone()))
            .unwrap_or_else(|| "unknown".to_owned());
        let t = by.entry(currency.clone()).or_insert_with(|| PayTotal { currency, ..PayTotal::default() });
        t.statements += 1;
        match (gross.and_then(|g| g.1), net.and_then(|n| n.1)) {
            (Some(g), Some(n)) => {
                t.gross_pay = t.gross_pay.saturating_add(g);
                t.net_pay = t.net_pay.saturating_add(n);
            }
            _ => t.incomplete += 1,
        }
    }
    by.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let id = PersonId::parse("0b6f3c9e-8f6e-4a51-9d0a-2a3f5c7e9b10").unwrap();
        assert_eq!(parse_people_cursor(&people_cursor(&id)).unwrap(), id);
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode("p1:x"), &URL_SAFE_NO_PAD.encode("n1:a#b")] {
            assert!(parse_people_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn totals_keep_currencies_apart_and_count_empty_amounts_aside() {
        let line = |s: &str| PayLine {
            connection_id: ConnectionId::parse("c").unwrap(),
            entity_id: EntityId::parse("e").unwrap(),
            payment_id: "p".into(),
            pay_date: None,
            pay_period: None,
            statement: RawValue::from_string(s.to_owned()).unwrap(),
        };
        let pay = [
            line(r#"{"gross_pay": {"amount": 100, "currency": "usd"}, "net_pay": {"amount": 80, "currency": "usd"}}"#),
            line(r#"{"gross_pay": {"amount": 50, "currency": "CAD"}, "net_pay": {"amount": null, "currency": "cad"}}"#),
            line(r#"{"gross_pay": {"amount": 10, "currency": "usd"}, "net_pay": {"amount": 9, "currency": "usd"}}"#),
            line(r#"{"gross_pay": null, "net_pay": null}"#),
        ];
        let t = totals(&pay);
        let got: Vec<(&str, i64, i64, u32, u32)> =
            t.iter().map(|t| (t.currency.as_str(), t.gross_pay, t.net_pay, t.statements, t.incomplete)).collect();
        assert_eq!(got, [("cad", 0, 0, 1, 1), ("unknown", 0, 0, 1, 1), ("usd", 110, 89, 2, 0)]);
    }
}
