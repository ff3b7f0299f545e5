//! Keeping a connection: re-authentication and disconnection.
//!
//! **Re-authentication** keeps the `connection_id` and issues a new token. Perch asks Finch for
//! a reauthentication session and hands out a state like the first connect; the callback then
//! swaps the new ciphertext in with one write conditioned on the stored `version`, so a
//! concurrent status check or webhook cannot interleave, and the old ciphertext stays until
//! that write commits.
//!
//! Once a disconnect has started, no reauthentication session is issued for the connection
//! (checked after its state is stored, see [`super::session`]).
//!
//! **Disconnection** is three steps, each safe to repeat, so a retry after any failure finishes
//! the job: mark the connection `disconnecting`, which also gives this call a lease on the
//! disconnect (concurrent calls wait for its outcome instead of calling Finch too); call
//! Finch's `/disconnect` with the token
//! (a 401 there means the token is already revoked, which is the goal); destroy the ciphertext
//! and keep a tombstone (id, customer, provider, times, last `Finch-Request-Id`) for audit.
//! Once the ciphertext is gone Finch is never called again for that connection. Billing at
//! Finch continues until `/disconnect` succeeds, which is why the state machine insists on it.
//!
//! **One entity** of a multi-entity connection is disconnected with Finch's
//! `/disconnect-entity`; the connection and its token stay for the others. The last live
//! entity is a full disconnect instead (a connection reaching nothing would still be billed).
//! Two entity disconnects racing for the last two entities both reach Finch; whichever records
//! its entity second finds none left and disconnects the connection.

use serde::{Deserialize, Serialize};

use crate::app::{Adapters, AppState};
use crate::crypto::TokenCipher;
use crate::domain::session::{known_products_opt, validate_minutes_to_expire, validate_products};
use crate::domain::{ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId, Error, FlowMode, Product};
use crate::events::{ChangeSource, StatusChanged};
use crate::finch::types::ReauthenticateRequest;
use crate::flows::session::{NewSession, Pending, start_flow};
use crate::store::{ConnectionRecord, DisconnectStore, ReadConnection, ReauthStore};

/// `POST /connections/{id}/reauthenticate` body; everything optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthRequest {
    #[serde(default)]
    pub flow: Option<FlowMode>,
    #[serde(default, deserialize_with = "known_products_opt")]
    pub products: Option<Vec<Product>>,
    #[serde(default)]
    pub minutes_to_expire: Option<u32>,
}

impl ReauthRequest {
    /// The same rules as a new session's (see [`crate::domain::session`]).
    fn validate(&self) -> Result<(), Error> {
        if let Some(p) = &self.products {
            validate_products(p)?;
        }
        validate_minutes_to_expire(self.minutes_to_expire)
    }
}

/// The caller's connection, or 404 — for a foreign, unknown or malformed id alike.
pub(crate) async fn owned_connection(
    store: &dyn ReadConnection,
    customer: &CustomerId,
    raw_id: &str,
) -> Result<ConnectionRecord, Error> {
    let id = ConnectionId::parse(raw_id).map_err(|_| Error::NotFound("connection"))?;
    match store.get_connection(&id).await? {
        Some(rec) if rec.customer == *customer => Ok(rec),
        _ => Err(Error::NotFound("connection")),
    }
}

/// Starts a re-authentication of one of the caller's connections.
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn reauthenticate<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
    req: &ReauthRequest,
) -> Result<NewSession, Error> {
    let store: &dyn ReauthStore = &*app.store;
    req.validate()?;
    let rec = owned_connection(store, customer, raw_id).await?;
    if rec.disconnected_at.is_some() {
        return Err(Error::NotFound("connection"));
    }
    if rec.status == ConnectionState::Disconnecting {
        // The employer would go through Connect for a connection about to be gone.
        return Err(crate::store::disconnecting_conflict());
    }
    let secrets = app.secrets.get().await?;
    let mode = req.flow.unwrap_or(FlowMode::Redirect);
    let body = ReauthenticateRequest {
        connection_id: rec.connection_id.as_str(),
        minutes_to_expire: req.minutes_to_expire,
        products: req.products.as_deref(),
        redirect_uri: (mode == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str()),
    };
    let session = match app.finch.reauthenticate_session(&secrets, &body).await {
        Ok(s) => s.value,
        Err(Error::Finch(e)) if e.status == 400 => {
            tracing::warn!(connection_id = %rec.connection_id, error = %e, "Finch no longer knows this connection");
            return Err(Error::conflict(
                "connection_not_found_at_finch",
                "Finch no longer has this connection; disconnect it and connect again.",
            ));
        }
        Err(e) => return Err(app.secrets.forget_on_auth_failure(e).await),
    };
    let pending = Pending {
        customer,
        finch_customer_id: rec.finch_customer_id,
        session,
        mode,
        reauth_of: Some(rec.connection_id),
    };
    start_flow(app, store, store, &secrets, pending, req.minutes_to_expire).await
}

/// What a disconnect found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disconnected {
    /// This call completed the disconnect.
    Now,
    /// It was already complete.
    Already,
}

/// How often a disconnect re-reads after losing a race before giving up with a 409.
const DISCONNECT_ATTEMPTS: u32 = 4;
/// How long the call that marked a connection holds its disconnect: past the functions'
/// 29-second timeout, so a holder that died frees it soon after.
const DISCONNECT_LEASE: time::Duration = time::Duration::seconds(45);
/// How long a concurrent call waits for the holder's outcome before answering 409.
const WAIT_FOR_HOLDER: std::time::Duration = std::time::Duration::from_secs(20);

/// Disconnects one of the caller's connections (see the module docs). Idempotent. Of
/// concurrent calls, only the one whose mark succeeded calls Finch; the others wait for its
/// outcome (a tombstone: done; a released lease: a failure they may retry themselves).
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn disconnect<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
) -> Result<Disconnected, Error> {
    let store: &dyn DisconnectStore = &*app.store;
    let waiting_since = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(20);
    let mut lost_races = 0;
    loop {
        let rec = owned_connection(store, customer, raw_id).await?;
        if rec.disconnected_at.is_some() {
            return Ok(Disconnected::Already);
        }
        let now = app.clock.now();
        if rec.disconnect_held_at(now) {
            if waiting_since.elapsed() >= WAIT_FOR_HOLDER {
                return Err(Error::conflict(
                    "disconnect_in_progress",
                    "This connection is being disconnected; try again.",
                ));
            }
            // Polling the record is the only channel between two Lambda invocations.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
            continue;
        }
        if store.mark_disconnecting(&rec.connection_id, rec.version, now + DISCONNECT_LEASE).await? {
            return finish_disconnect(app, store, &rec).await;
        }
        lost_races += 1;
        if lost_races >= DISCONNECT_ATTEMPTS {
            return Err(Error::conflict("connection_busy", "The connection kept changing; try again."));
        }
    }
}

/// The holder's part: revoke at Finch, destroy the ciphertext, publish. A token that can never
/// be decrypted again cannot be revoked: the connection is still destroyed here, the tombstone
/// says so, and the ERROR line tells the operator to disconnect it from Finch's dashboard.
/// Any other failure gives the disconnect up for a retry.
async fn finish_disconnect<A: Adapters>(
    app: &AppState<A>,
    store: &dyn DisconnectStore,
    rec: &ConnectionRecord,
) -> Result<Disconnected, Error> {
    let id = &rec.connection_id;
    let (request_id, note) = match &rec.token {
        Some(ciphertext) => match revoke_at_finch(app, rec, ciphertext).await {
            Ok(request_id) => (request_id, None),
            Err(e @ Error::TokenUnreadable(_)) => {
                tracing::error!(connection_id = %id, error = %e.chain(), "token cannot be decrypted, so Finch cannot be told; destroying it anyway (disconnect the connection from Finch's dashboard to stop billing)");
                (rec.last_finch_request_id.clone(), Some("token_unreadable: not revoked at Finch"))
            }
            Err(e) => {
                if let Err(release) = store.release_disconnect(id).await {
                    tracing::warn!(connection_id = %id, error = %release.chain(), "disconnect lease not released; it lapses on its own");
                }
                return Err(e);
            }
        },
        None => (rec.last_finch_request_id.clone(), None),
    };
    let shredded = match shred_data(app, store, id).await {
        Ok(s) => s,
        Err(e) => {
            if let Err(release) = store.release_disconnect(id).await {
                tracing::warn!(connection_id = %id, error = %release.chain(), "disconnect lease not released; it lapses on its own");
            }
            return Err(e);
        }
    };
    let note = match (note, shredded) {
        (Some(n), true) => Some(format!("{n}; synced data shredded")),
        (Some(n), false) => Some(n.to_owned()),
        (None, true) => Some("synced data shredded".to_owned()),
        (None, false) => None,
    };
    if !store.tombstone(id, request_id.as_deref(), note.as_deref()).await? {
        return Ok(Disconnected::Already);
    }
    tracing::info!(connection_id = %id, finch_request_id = ?request_id, "connection disconnected; token destroyed");
    let previous = rec.status.finch().cloned();
    let change =
        StatusChanged::of(rec, previous, ConnectionStatus::Disconnected, ChangeSource::Disconnect, app.clock.now());
    app.events.publish(&change).await;
    Ok(Disconnected::Now)
}

/// The connection's synced data: its data key is deleted first, so every record is unreadable
/// at once (and a sync still running can write nothing more); then its items, here while they
/// are few, else by the sync worker — which also takes the connection's people out of the
/// customer's person index, so it is asked whenever the connection had data. Whether there was
/// a key.
async fn shred_data<A: Adapters>(
    app: &AppState<A>,
    store: &dyn DisconnectStore,
    id: &ConnectionId,
) -> Result<bool, Error> {
    let shredded = store.shred_key(id).await?;
    if !store.purge_some(id, PURGE_INLINE).await? || shredded {
        let work = crate::queue::SyncWork::new(id.clone(), crate::queue::Trigger::Purge);
        match &app.sync_queue {
            Some(q) => crate::queue::SyncQueue::send(q.as_ref(), &[work], std::time::Duration::ZERO).await?,
            None => {
                tracing::error!(connection_id = %id, "synced data or people left to delete and no SYNC_QUEUE_URL to hand them to; the data is unreadable (its key is shredded)")
            }
        }
    }
    Ok(shredded)
}

/// Records-table items a disconnect deletes itself before handing the rest to the worker.
const PURGE_INLINE: usize = 500;

/// Finch's `/disconnect` with the connection's token; its request id. A 401 means the token
/// is already revoked (disconnected at Finch before), which is the goal.
async fn revoke_at_finch<A: Adapters>(
    app: &AppState<A>,
    rec: &ConnectionRecord,
    ciphertext: &crate::crypto::EncryptedToken,
) -> Result<Option<String>, Error> {
    let token = app.cipher.decrypt(ciphertext, &rec.connection_id, &rec.customer).await?;
    match app.finch.disconnect(&token).await {
        Ok(t) => Ok(t.request_id),
        Err(Error::Finch(e)) if e.status == 401 => {
            tracing::info!(connection_id = %rec.connection_id, finch_request_id = ?e.request_id, "Finch says the token is already revoked");
            Ok(e.request_id.clone())
        }
        Err(e) => {
            tracing::warn!(connection_id = %rec.connection_id, error = %e.chain(), "Finch disconnect failed; the connection stays disconnecting until a retry");
            Err(e)
        }
    }
}

/// Disconnects one entity of one of the caller's connections (see the module docs).
/// Idempotent: an entity already disconnected, or a connection already gone, is done. An
/// entity the connection does not list is a 404, as is anyone else's connection.
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn disconnect_entity<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
    raw_entity: &str,
) -> Result<Disconnected, Error> {
    let store: &dyn DisconnectStore = &*app.store;
    let entity = EntityId::parse(raw_entity).map_err(|_| Error::NotFound("entity"))?;
    for _ in 0..DISCONNECT_ATTEMPTS {
        let rec = owned_connection(store, customer, raw_id).await?;
        if rec.disconnected_at.is_some() {
            return Ok(Disconnected::Already);
        }
        let Some(target) = rec.entities.iter().find(|e| e.id == entity) else { return Err(Error::NotFound("entity")) };
        if !target.is_live() {
            return Ok(Disconnected::Already);
        }
        if rec.status == ConnectionState::Disconnecting || rec.live_entities().all(|e| e.id == entity) {
            tracing::info!(connection_id = %rec.connection_id, entity_id = %entity, "last entity: disconnecting the connection");
            return disconnect(app, customer, raw_id).await;
        }
        let Some(ciphertext) = &rec.token else { return Ok(Disconnected::Already) };
        let request_id = revoke_entity_at_finch(app, &rec, ciphertext, &entity).await?;
        let Some(after) = store.disconnect_entity(&rec.connection_id, &entity, request_id.as_deref()).await? else {
            continue; // Changed meanwhile (another disconnect): look again.
        };
        tracing::info!(connection_id = %rec.connection_id, entity_id = %entity, finch_request_id = ?request_id, "entity disconnected");
        let previous = Some(target.status.clone());
        let change = StatusChanged::of(
            &after,
            previous,
            ConnectionStatus::Disconnected,
            ChangeSource::Disconnect,
            app.clock.now(),
        )
        .for_entity(&entity);
        app.events.publish(&change).await;
        if after.live_entities().next().is_none() {
            // A concurrent entity disconnect took the other last one: the connection goes.
            return disconnect(app, customer, raw_id).await;
        }
        return Ok(Disconnected::Now);
    }
    Err(Error::conflict("connection_busy", "The connection kept changing; try again."))
}

/// Finch's `/disconnect-entity` for one entity; its request id. Finch not knowing the entity
/// (400 `NOT_FOUND`) means it is gone there already, which is the goal.
async fn revoke_entity_at_finch<A: Adapters>(
    app: &AppState<A>,
    rec: &ConnectionRecord,
    ciphertext: &crate::crypto::EncryptedToken,
    entity: &EntityId,
) -> Result<Option<String>, Error> {
    let token = app.cipher.decrypt(ciphertext, &rec.connection_id, &rec.customer).await?;
    match app.finch.disconnect_entity(&token, entity.as_str()).await {
        Ok(t) => Ok(t.request_id),
        Err(Error::Finch(e)) if e.status == 400 => {
            tracing::info!(connection_id = %rec.connection_id, entity_id = %entity, finch_request_id = ?e.request_id, error = %e, "Finch does not know the entity (any more)");
            Ok(e.request_id.clone())
        }
        Err(e) => {
            tracing::warn!(connection_id = %rec.connection_id, entity_id = %entity, error = %e.chain(), "Finch entity disconnect failed; nothing changed, retry");
            Err(e)
        }
    }
}
