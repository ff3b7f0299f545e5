//! Finch webhooks: verify exactly as Finch's SDKs do, then apply `account.updated` at once.
//!
//! Verification (`docs/finch-contract.md`, webhooks): the secret is a standard base64 string whose *decoded*
//! bytes are the HMAC-SHA256 key; the signed content is `{finch-event-id}.{finch-timestamp}.`
//! followed by the raw body as received; the timestamp must be within ±300 s of now;
//! `finch-signature` holds space-separated `version,signature` pairs and any `v1` pair that
//! matches (compared in constant time) is enough — that is how a secret rotation is carried.
//! Anything else is refused before the body is even parsed, with no side effect.
//!
//! Delivery is at least once and unordered. The event id is recorded first (a conditional
//! put): a redelivery is acknowledged with 200 and changes nothing — answering it with an
//! error would only make Finch retry it for hours. A status is applied only if the event is
//! newer than the status stored (`status_observed_at`), so a late, older event cannot undo a
//! newer one from the status check or a re-authentication. An event for a connection Perch
//! does not hold yet — Finch may send it while the first callback is between its exchange and
//! its save — is parked for that callback rather than lost.
//!
//! **Entities.** An `account.updated` naming an `entity_id` (Finch sends one for multi-entity
//! connections) changes that entity's status only; for a connection of one entity it is the
//! connection's too. An entity the connection does not list is answered `unknown_entity`, and
//! the sweep is asked to read the connection's entities again (Finch may have added it), as
//! it is for a `company.updated` and for a connection that just became `connected` without a
//! known legal name: the webhook itself never calls Finch.
//!
//! **Data events** (`directory.*`, `individual.*`, `employment.*`, `company.updated`,
//! `payment.*`, `pay_statement.*`, `job.initial_data_sync_{org,payroll}.succeeded`) for a live
//! connection queue a sync run of the entity
//! they name ([`crate::flows::sync::after_webhook`]); the ids they carry are a hint, and the
//! schedule stays the guarantee (webhooks depend on Finch's plan).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::app::{Adapters, AppState};
use crate::domain::{ConnectionId, ConnectionStatus, EntityId, Error, EventId};
use crate::events::{ChangeSource, StatusChanged};
use crate::flows::sync;
use crate::store::{ConnectionRecord, ParkedStatus, Pushed, WebhookStore};

/// Finch's tolerance for the timestamp, in seconds, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// How long an event id is remembered (Finch retries for about a day).
const EVENT_ID_TTL: time::Duration = time::Duration::days(7);

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub event_id: EventId,
    pub timestamp: i64,
}

fn unauthorized(why: &'static str) -> Error {
    Error::Unauthenticated(why)
}

/// Checks a webhook's headers and raw body against the base64 `secret` at time `now`.
pub fn verify(
    secret: &str,
    event_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Verified, Error> {
    let key = STANDARD.decode(secret.trim()).map_err(|_| Error::internal("webhook_secret is not standard base64"))?;
    if key.is_empty() || STANDARD.encode(&key) != secret.trim() {
        return Err(Error::internal("webhook_secret is not canonical base64"));
    }
    let (Some(event_id), Some(timestamp), Some(signature)) = (event_id, timestamp, signature) else {
        return Err(Error::invalid(
            "webhook_headers_missing",
            "finch-event-id, finch-timestamp and finch-signature are required.",
        ));
    };
    let event_id = EventId::parse(event_id)
        .map_err(|_| Error::invalid("webhook_headers_invalid", "finch-event-id is malformed."))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Error::invalid("webhook_headers_invalid", "finch-timestamp is not an integer."))?;
    if now.saturating_sub(ts) > TOLERANCE_SECS {
        return Err(unauthorized("The webhook timestamp is too old."));
    }
    if ts.saturating_sub(now) > TOLERANCE_SECS {
        return Err(unauthorized("The webhook timestamp is too new."));
    }
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| Error::internal("webhook key rejected"))?;
    mac.update(event_id.as_str().as_bytes());
    mac.update(b".");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let matched = signature.split(' ').filter_map(|entry| entry.split_once(',')).any(|(version, sig)| {
        version == "v1"
            && !sig.contains(',')
            && STANDARD.decode(sig).is_ok_and(|given| bool::from(given.as_slice().ct_eq(expected.as_slice())))
    });
    if !matched {
        return Err(unauthorized("No webhook signature matched."));
    }
    Ok(Verified { event_id, timestamp: ts })
}

/// The envelope of every Finch webhook event.
#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub entity_id: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// `account.updated`'s data: `authentication_method` is a string in Finch's docs and an object
/// in its spec, so either is accepted; `status` is an open enum.
#[derive(Debug, Deserialize)]
pub struct AccountUpdated {
    pub status: ConnectionStatus,
    #[serde(default)]
    pub authentication_method: Option<AuthenticationMethod>,
}

/// Either shape of `authentication_method`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AuthenticationMethod {
    Name(String),
    Detail {
        #[serde(default, rename = "type")]
        kind: Option<String>,
    },
}

impl AuthenticationMethod {
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Name(n) => Some(n),
            Self::Detail { kind } => kind.as_deref(),
        }
    }
}

/// What Perch did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handled {
    /// The status was stored and the change published.
    Applied,
    /// Not applied: the connection is being disconnected, gone, or holds a newer status; or
    /// Perch does not hold it (yet: the status is parked for its first callback).
    Stale,
    /// Nothing to do: another event type, no connection id, a connection Perch does not hold.
    Ignored,
    /// A redelivery of an event already handled.
    Duplicate,
    /// The event names an entity the connection does not list; the sweep reads the entities
    /// again.
    UnknownEntity,
    /// `company.updated`: the sweep reads the company and its entities again.
    RefreshRequested,
    /// A data event (`directory.*`, `individual.*`, `employment.*`, `company.updated`, the first
    /// org sync's `job.initial_data_sync_org.succeeded`): a sync run of the entity was queued.
    SyncQueued,
}

/// What Perch did with an event (the webhook's 200 body).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Handled,
    pub event_type: String,
}

/// What an event asks of a connection.
enum Update {
    /// `account.updated`: a status for a connection (if it names one), or one of its entities.
    Status { connection_id: Option<ConnectionId>, entity: Option<EntityId>, data: AccountUpdated },
    /// `company.updated`: read the company again (and its data).
    Company(ConnectionId, Option<EntityId>),
    /// A data event: sync the entity again (and read this payment's statements again).
    Data(ConnectionId, Option<EntityId>, Option<String>),
}

/// The events whose data a sync refetches (ids only in their payload: a hint).
fn is_data_event(event_type: &str) -> bool {
    ["job.initial_data_sync_org.succeeded", "job.initial_data_sync_payroll.succeeded"].contains(&event_type)
        || ["directory.", "individual.", "employment.", "payment.", "pay_statement."]
            .iter()
            .any(|p| event_type.strip_prefix(p).is_some_and(|rest| matches!(rest, "created" | "updated" | "deleted")))
}

/// Parses everything Perch acts on before the event is recorded, so a malformed delivery
/// leaves no trace and Finch's retry is handled as new.
fn parse(body: &[u8]) -> Result<(Event, Option<Update>), Error> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|_| Error::invalid("invalid_body", "The webhook body is not a Finch event."))?;
    let connection_id = || {
        event
            .connection_id
            .as_deref()
            .map(ConnectionId::parse)
            .transpose()
            .map_err(|_| Error::invalid("invalid_body", "The event's connection_id is malformed."))
    };
    let entity = || {
        event
            .entity_id
            .as_deref()
            .map(EntityId::parse)
            .transpose()
            .map_err(|_| Error::invalid("invalid_body", "The event's entity_id is malformed."))
    };
    match event.event_type.as_str() {
        "account.updated" => {
            let data: AccountUpdated = serde_json::from_value(event.data.clone().unwrap_or(serde_json::Value::Null))
                .map_err(|_| Error::invalid("invalid_body", "account.updated carries no readable status."))?;
            let (connection_id, entity) = (connection_id()?, entity()?);
            Ok((event, Some(Update::Status { connection_id, entity, data })))
        }
        "company.updated" => {
            let (connection_id, entity) = (connection_id()?, entity()?);
            Ok((event, connection_id.map(|c| Update::Company(c, entity))))
        }
        t if is_data_event(t) => {
            let (connection_id, entity) = (connection_id()?, entity()?);
            // A hint only, so a payment id Perch would not file a record under is dropped, not
            // refused.
            let pay_event = t.starts_with("payment.") || t.starts_with("pay_statement.");
            let payment = event
                .data
                .as_ref()
                .filter(|_| pay_event)
                .and_then(|d| d.get("payment_id"))
                .and_then(serde_json::Value::as_str)
                .filter(|p| {
                    !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .map(str::to_owned);
            Ok((event, connection_id.map(|c| Update::Data(c, entity, payment))))
        }
        _ => Ok((event, None)),
    }
}

/// Verifies and handles one delivery.
#[tracing::instrument(skip_all)]
pub async fn handle<A: Adapters>(
    app: &AppState<A>,
    event_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Outcome, Error> {
    let store: &dyn WebhookStore = &*app.store;
    let secrets = app.secrets.get().await?;
    let secret = secrets
        .webhook_secret
        .as_ref()
        .map(secrecy::ExposeSecret::expose_secret)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::internal("webhook_secret is not configured"))?;
    let verified = verify(secret, event_id, timestamp, signature, body, OffsetDateTime::now_utc().unix_timestamp())?;
    let (event, update) = parse(body)?;
    let outcome = |status| Ok(Outcome { status, event_type: event.event_type.clone() });
    let id = &verified.event_id;

    if !store.mark_event(id, EVENT_ID_TTL).await? {
        tracing::info!(event_id = %id, event_type = %event.event_type, "duplicate webhook delivery");
        return outcome(Handled::Duplicate);
    }
    let (connection_id, entity, data) = match update {
        None => {
            tracing::info!(event_id = %id, event_type = %event.event_type, connection_id = ?event.connection_id, "webhook acknowledged");
            return outcome(Handled::Ignored);
        }
        Some(Update::Company(connection_id, entity)) => {
            return outcome(company_updated(app, store, id, &connection_id, entity.as_ref()).await?);
        }
        Some(Update::Data(connection_id, entity, payment)) => {
            let (event_type, payment) = (&event.event_type, payment.as_deref());
            return outcome(data_changed(app, store, id, event_type, &connection_id, entity.as_ref(), payment).await?);
        }
        Some(Update::Status { connection_id, entity, data }) => (connection_id, entity, data),
    };
    let Some(connection_id) = connection_id else {
        tracing::info!(event_id = %id, "account.updated without connection_id (legacy payload); nothing to apply");
        return outcome(Handled::Ignored);
    };
    let observed_at = OffsetDateTime::from_unix_timestamp(verified.timestamp)
        .map_err(|_| Error::invalid("webhook_headers_invalid", "finch-timestamp is out of range."))?;
    let applied = match &entity {
        Some(e) => push_entity(app, store, &connection_id, e, &data.status, observed_at, id).await,
        None => push(store, &connection_id, &data.status, observed_at, id)
            .await
            .map(|old| old.map(|o| Entity::Connection(Box::new(o)))),
    };
    let old = match unmarked_on_failure(store, id, applied).await? {
        Some(Entity::Connection(old)) => *old,
        Some(Entity::Changed) => return outcome(Handled::Applied),
        Some(Entity::Unknown) => return outcome(Handled::UnknownEntity),
        None => return outcome(Handled::Stale),
    };
    if data.status == ConnectionStatus::Connected && old.employer.legal_name.is_none() {
        // The company can be read now (it answered 202 before): the sweep does it.
        if let Err(e) = store.request_refresh(&connection_id, OffsetDateTime::now_utc()).await {
            tracing::warn!(connection_id = %connection_id, error = %e.chain(), "refresh not requested; the sweep asks for the company anyway");
        }
    }
    tracing::info!(
        event_id = %id, connection_id = %connection_id, status = data.status.as_str(),
        entity_id = ?event.entity_id, authentication_method = ?data.authentication_method.as_ref().and_then(AuthenticationMethod::name),
        "account.updated applied"
    );
    let previous = old.status.finch().cloned();
    app.events.publish(&StatusChanged::of(&old, previous, data.status, ChangeSource::Webhook, observed_at)).await;
    outcome(Handled::Applied)
}

/// `company.updated`: the sweep reads the company again, and the entity's data is synced.
async fn company_updated<A: Adapters>(
    app: &AppState<A>,
    store: &dyn WebhookStore,
    id: &EventId,
    connection_id: &ConnectionId,
    entity: Option<&EntityId>,
) -> Result<Handled, Error> {
    let held =
        unmarked_on_failure(store, id, store.request_refresh(connection_id, OffsetDateTime::now_utc()).await).await?;
    tracing::info!(event_id = %id, connection_id = %connection_id, held, "company.updated: the sweep reads the company again");
    if held {
        unmarked_on_failure(store, id, sync::after_webhook(app, connection_id, entity, None).await).await?;
    }
    Ok(if held { Handled::RefreshRequested } else { Handled::Ignored })
}

/// A data event: a sync run of the entity, for a live connection Perch holds (anything else is
/// acknowledged and dropped).
async fn data_changed<A: Adapters>(
    app: &AppState<A>,
    store: &dyn WebhookStore,
    id: &EventId,
    event_type: &str,
    connection_id: &ConnectionId,
    entity: Option<&EntityId>,
    payment: Option<&str>,
) -> Result<Handled, Error> {
    let held = unmarked_on_failure(store, id, store.get_connection(connection_id).await).await?;
    let queued = held.is_some_and(|r| r.is_live_at_finch())
        && unmarked_on_failure(store, id, sync::after_webhook(app, connection_id, entity, payment).await).await?;
    tracing::info!(event_id = %id, event_type, connection_id = %connection_id, queued, "data webhook");
    Ok(if queued { Handled::SyncQueued } else { Handled::Ignored })
}

/// `result`, after forgetting the event if it is a failure: Finch's retry then finds the event
/// unrecorded and is handled as new.
async fn unmarked_on_failure<T>(
    store: &dyn WebhookStore,
    event: &EventId,
    result: Result<T, Error>,
) -> Result<T, Error> {
    if result.is_err() {
        store.unmark_event(event).await?;
    }
    result
}

/// What an entity's status did.
enum Entity {
    /// The connection's status (a single-entity connection): the record as it was before.
    Connection(Box<ConnectionRecord>),
    /// The entity's own, applied and published.
    Changed,
    /// The connection does not list the entity.
    Unknown,
}

/// Applies a status pushed for one entity. For a connection of one entity it is the
/// connection's status too, applied by the connection's rule; `None` when not applied.
async fn push_entity<A: Adapters>(
    app: &AppState<A>,
    store: &dyn WebhookStore,
    connection_id: &ConnectionId,
    entity: &EntityId,
    status: &ConnectionStatus,
    observed_at: OffsetDateTime,
    event: &EventId,
) -> Result<Option<Entity>, Error> {
    let old = match store.apply_pushed_entity_status(connection_id, entity, status, observed_at).await? {
        Pushed::Applied(old) => *old,
        Pushed::NoSuchEntity => {
            tracing::info!(event_id = %event, connection_id = %connection_id, entity_id = %entity, "account.updated for an entity the connection does not list; the sweep reads its entities again");
            store.request_refresh(connection_id, OffsetDateTime::now_utc()).await?;
            return Ok(Some(Entity::Unknown));
        }
        // Not stored yet (its first callback is in flight: that callback's introspection lists
        // the entity's status as Finch has it then), gone, or older than what is stored.
        Pushed::Unknown | Pushed::Stale => return Ok(None),
    };
    if old.entities.len() == 1 {
        return push(store, connection_id, status, observed_at, event)
            .await
            .map(|o| o.map(|o| Entity::Connection(Box::new(o))));
    }
    tracing::info!(event_id = %event, connection_id = %connection_id, entity_id = %entity, status = status.as_str(), "entity status applied");
    let previous = old.entities.iter().find(|e| e.id == *entity).map(|e| e.status.clone());
    let change =
        StatusChanged::of(&old, previous, status.clone(), ChangeSource::Webhook, observed_at).for_entity(entity);
    app.events.publish(&change).await;
    Ok(Some(Entity::Changed))
}

/// Applies a pushed status; the record as it was before, or `None` when not applied. For a
/// connection Perch does not hold the status is parked first — its first callback may be
/// between the exchange and the save, and stores it then — and applied once more after, so
/// whichever of the two writes second sees the other's.
async fn push(
    store: &dyn WebhookStore,
    connection_id: &ConnectionId,
    status: &ConnectionStatus,
    observed_at: OffsetDateTime,
    event: &EventId,
) -> Result<Option<ConnectionRecord>, Error> {
    match store.apply_pushed_status(connection_id, status, observed_at, event).await? {
        Pushed::Applied(old) => return Ok(Some(*old)),
        Pushed::Stale => {
            tracing::info!(event_id = %event, connection_id = %connection_id, "account.updated not applied: disconnected, or older than the stored status");
            return Ok(None);
        }
        Pushed::Unknown | Pushed::NoSuchEntity => {}
    }
    let parked = ParkedStatus { status: status.clone(), observed_at, event: event.clone() };
    store.park_status(connection_id, &parked).await?;
    match store.apply_pushed_status(connection_id, status, observed_at, event).await? {
        Pushed::Applied(old) => Ok(Some(*old)),
        _ => {
            tracing::info!(event_id = %event, connection_id = %connection_id, "account.updated for a connection Perch does not hold (yet); parked for its callback");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Finch's own test vector (finch-api-node tests/api-resources/webhooks.test.ts).
    const SECRET: &str = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
    const ID: &str = "msg_2Lh9KRb0pzN4LePd3XiA4v12Axj";
    const TS: i64 = 1_676_312_382;
    const BODY: &[u8] = br#"{"company_id":"720be419-0293-4d32-a707-32179b0827ab"}"#;
    const SIG: &str = "m7y0TV2C+hlHxU42wCieApTSTaA8/047OAplBqxIV/s=";

    fn check(sig: &str, now: i64) -> Result<Verified, Error> {
        verify(SECRET, Some(ID), Some(&TS.to_string()), Some(sig), BODY, now)
    }

    #[test]
    fn finchs_test_vector_verifies() {
        let v = check(&format!("v1,{SIG}"), TS).unwrap();
        assert_eq!(v, Verified { event_id: EventId::parse(ID).unwrap(), timestamp: TS });
    }

    #[test]
    fn tolerance_is_300_seconds_either_way() {
        assert!(check(&format!("v1,{SIG}"), TS + 300).is_ok());
        assert!(check(&format!("v1,{SIG}"), TS - 300).is_ok());
        assert!(check(&format!("v1,{SIG}"), TS + 360).is_err(), "too old");
        assert!(check(&format!("v1,{SIG}"), TS - 360).is_err(), "too new");
    }

    #[test]
    fn only_v1_entries_count_and_any_may_match() {
        assert!(check(&format!("v2,{SIG}"), TS).is_err());
        assert!(check(&format!("v2,{SIG} v1,{SIG}"), TS).is_ok());
        assert!(check(&format!("v1,AAAA v1,{SIG}"), TS).is_ok());
        assert!(check(SIG, TS).is_err(), "a bare signature has no version");
        assert!(check("v1,AAAA", TS).is_err());
        assert!(check("", TS).is_err());
    }

    #[test]
    fn the_raw_body_is_what_is_signed() {
        let reformatted = br#"{"company_id": "720be419-0293-4d32-a707-32179b0827ab"}"#;
        assert!(verify(SECRET, Some(ID), Some(&TS.to_string()), Some(&format!("v1,{SIG}")), reformatted, TS).is_err());
    }

    #[test]
    fn missing_headers_are_invalid_and_bad_signatures_unauthenticated() {
        let e = verify(SECRET, None, Some("1"), Some("v1,x"), BODY, TS).unwrap_err();
        assert!(matches!(e, Error::Invalid { code: "webhook_headers_missing", .. }));
        let e = verify(SECRET, Some(ID), Some("soon"), Some("v1,x"), BODY, TS).unwrap_err();
        assert!(matches!(e, Error::Invalid { code: "webhook_headers_invalid", .. }));
        let e = verify(SECRET, Some("has space"), Some("1"), Some("v1,x"), BODY, TS).unwrap_err();
        assert!(matches!(e, Error::Invalid { code: "webhook_headers_invalid", .. }));
        let e = check("v1,AAAA", TS).unwrap_err();
        assert!(matches!(e, Error::Unauthenticated(_)));
    }

    #[test]
    fn authentication_method_is_a_string_or_an_object() {
        let a: AccountUpdated =
            serde_json::from_str(r#"{"status":"reauth","authentication_method":"assisted"}"#).unwrap();
        assert_eq!(a.authentication_method.unwrap().name(), Some("assisted"));
        let b: AccountUpdated = serde_json::from_str(
            r#"{"status":"connected","authentication_method":{"type":"credential","benefits_support":null}}"#,
        )
        .unwrap();
        assert_eq!(b.authentication_method.unwrap().name(), Some("credential"));
        let c: AccountUpdated = serde_json::from_str(r#"{"status":"something_new"}"#).unwrap();
        assert_eq!(c.status, ConnectionStatus::Other("something_new".into()));
    }
}
