//! Keeping a connection: re-authentication and disconnection.
//!
//! **Re-authentication** keeps the `connection_id` and issues a new token. Perch asks Finch for
//! a reauthentication session and hands out a state like the first connect; the callback then
//! swaps the new ciphertext in with one write conditioned on the stored `version`, so a
//! concurrent status check or webhook cannot interleave, and the old ciphertext stays until
//! that write commits.
//!
//! **Disconnection** is three steps, each safe to repeat, so a retry after any failure finishes
//! the job: mark the connection `disconnecting`; call Finch's `/disconnect` with the token
//! (a 401 there means the token is already revoked, which is the goal); destroy the ciphertext
//! and keep a tombstone (id, customer, provider, times, last `Finch-Request-Id`) for audit.
//! Once the ciphertext is gone Finch is never called again for that connection. Billing at
//! Finch continues until `/disconnect` succeeds, which is why the state machine insists on it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::{Adapters, AppState};
use crate::crypto::TokenCipher;
use crate::domain::session::{known_products_opt, validate_minutes_to_expire, validate_products};
use crate::domain::{ConnectionId, ConnectionState, ConnectionStatus, CustomerId, Error, FlowMode, Product};
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
async fn owned_connection(
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
    if rec.is_disconnecting_or_gone() {
        return Err(Error::NotFound("connection"));
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
    start_flow(app, store, &secrets, pending, req.minutes_to_expire).await
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

/// Disconnects one of the caller's connections (see the module docs). Idempotent.
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn disconnect<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    raw_id: &str,
) -> Result<Disconnected, Error> {
    let store: &dyn DisconnectStore = &*app.store;
    for _ in 0..DISCONNECT_ATTEMPTS {
        let rec = owned_connection(store, customer, raw_id).await?;
        if rec.disconnected_at.is_some() {
            return Ok(Disconnected::Already);
        }
        if rec.status != ConnectionState::Disconnecting
            && !store.mark_disconnecting(&rec.connection_id, rec.version).await?
        {
            continue;
        }
        let request_id = match &rec.token {
            Some(ciphertext) => revoke_at_finch(app, &rec, ciphertext).await?,
            None => rec.last_finch_request_id.clone(),
        };
        if store.tombstone(&rec.connection_id, request_id.as_deref()).await? {
            tracing::info!(connection_id = %rec.connection_id, finch_request_id = ?request_id, "connection disconnected; token destroyed");
            let previous = rec.status.finch().cloned();
            let change = StatusChanged::of(
                &rec,
                previous,
                ConnectionStatus::Disconnected,
                ChangeSource::Disconnect,
                OffsetDateTime::now_utc(),
            );
            app.events.publish(&change).await;
            return Ok(Disconnected::Now);
        }
    }
    Err(Error::conflict("connection_busy", "The connection kept changing; try again."))
}

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
