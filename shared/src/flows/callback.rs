//! The end of a Connect flow, as named steps:
//!
//! 1. `consume_state`: verify the state's signature and consume its stored flow — before
//!    anything reaches Finch, and once only (a replayed URL finds nothing);
//! 2. `guard_code`: mark the code as being exchanged, so a replay gets the stored result or
//!    a 409, never a second exchange;
//! 3. `exchange`: `POST /auth/token`, with Finch's refusals mapped (a bad code is the
//!    caller's 400; a failure that provably never reached Finch frees the code again);
//! 4. `learn`: introspect the token and read the company name (either may fail: the
//!    connection is then stored as `pending` and the sweep fills it in);
//! 5. `check_ownership`: Finch must have filed the connection under a `customer_id` this
//!    customer claimed, or the code came from someone else's flow;
//! 6. `save`: encrypt the token and write the connection — created, or its token replaced at
//!    the version read — and mark the code done, in one transaction; then the status event.
//!
//! Once the code is exchanged, every failure is logged with the connection id: the next
//! Connect attempt for this customer recovers the connection (Finch answers
//! `connection_already_exists`, see [`super::session`]).

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::{Adapters, AppState};
use crate::crypto::{EncryptedToken, TokenCipher, code_hash, state};
use crate::domain::{
    AccessToken, AuthorizationCode, CodeHash, ConnectionId, ConnectionState, ConnectionStatus, CustomerId, Error,
    FinchCustomerId, FlowMode, Product,
};
use crate::events::{ChangeSource, StatusChanged};
use crate::finch::Traced;
use crate::finch::types::{Introspection, TokenResponse};
use crate::secrets::FinchSecrets;
use crate::store::{CallbackStore, ConnectionRecord, ConnectionSummary, ExchangeStart, PendingFlow, SaveOutcome};
use secrecy::ExposeSecret;

/// How many times a save that lost a race is retried.
const SAVE_ATTEMPTS: u32 = 3;

/// What the callback received.
#[derive(Debug)]
pub struct CallbackInput {
    pub code: AuthorizationCode,
    pub state: Option<String>,
    pub mode: FlowMode,
    /// The JWT's customer (embedded flow); `None` for the browser redirect.
    pub caller: Option<CustomerId>,
}

/// What the callback did with the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new connection.
    Created,
    /// An existing connection of the customer got a new token.
    Reauthenticated,
    /// The code was already exchanged into this connection (a replay).
    AlreadyConnected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Reauthenticated => "reauthenticated",
            Self::AlreadyConnected => "already_connected",
        }
    }
}

/// The connection, and what happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackOutcome {
    pub connection: ConnectionSummary,
    pub outcome: Outcome,
}

fn state_gone() -> Error {
    Error::invalid("state_invalid", "The state is missing, expired or already used; start Connect again.")
}

fn code_refused() -> Error {
    Error::invalid("code_invalid", "The authorization code is invalid, expired or already used.")
}

/// Completes a Connect flow (see the module docs).
#[tracing::instrument(skip_all, fields(mode = ?input.mode))]
pub async fn complete_callback<A: Adapters>(app: &AppState<A>, input: CallbackInput) -> Result<CallbackOutcome, Error> {
    let store: &dyn CallbackStore = &*app.store;
    // Refuse what cannot succeed before touching Secrets Manager, DynamoDB or Finch.
    if input.state.is_none() && (input.mode == FlowMode::Redirect || input.caller.is_none()) {
        return Err(state_gone());
    }
    let secrets = app.secrets.get().await?;
    let now = OffsetDateTime::now_utc();
    let (flow, customer) = consume_state(store, &secrets, &input, now).await?;
    let code = code_hash(secrets.state_key.expose_secret(), &input.code)?;
    if let Some(replayed) = guard_code(store, &code, &customer, now).await? {
        return Ok(replayed);
    }
    let Traced { value: token, request_id: exchange_request_id } =
        exchange(app, store, &secrets, &input, &code).await?;
    tracing::info!(connection_id = %token.connection_id, provider = %token.provider_id, "code exchanged");
    let learned = learn(app, &token, exchange_request_id).await;
    let finch_customer_id = check_ownership(store, &token, &learned, flow.as_ref(), &customer).await?;
    if let Some(expected) = flow.as_ref().and_then(|f| f.reauth_of.as_ref())
        && *expected != token.connection_id
    {
        tracing::warn!(expected = %expected, got = %token.connection_id, "reauthentication produced a different connection");
    }
    let encrypted = app.cipher.encrypt(&token.access_token, &token.connection_id, &customer).await.inspect_err(|e| {
        tracing::error!(connection_id = %token.connection_id, error = %e.chain(), "token exchanged but not stored; the next connect attempt for this customer recovers the connection");
    })?;
    let new = NewConnection { customer, finch_customer_id, token: &token, learned, encrypted };
    save(app, store, &new, &code).await
}

/// Step 1: the flow the state names, consumed, and the customer it belongs to. The embedded
/// flow may come without a state; its customer is then the caller's.
async fn consume_state(
    store: &dyn CallbackStore,
    secrets: &FinchSecrets,
    input: &CallbackInput,
    now: OffsetDateTime,
) -> Result<(Option<PendingFlow>, CustomerId), Error> {
    let Some(value) = &input.state else {
        // Checked by the caller: only the embedded flow of a signed-in caller gets here.
        let caller = input.caller.clone().ok_or_else(state_gone)?;
        return Ok((None, caller));
    };
    let verified = state::verify(secrets.state_key.expose_secret(), value)?;
    let flow = store.take_state(verified.id(), now, input.caller.as_ref()).await?.ok_or_else(state_gone)?;
    if flow.mode != input.mode {
        return Err(state_gone());
    }
    let customer = flow.customer.clone();
    Ok((Some(flow), customer))
}

/// Step 2: starts the code's exchange, or answers a replay: the stored connection for the same
/// customer, a refusal for anyone else, a 409 while another call is exchanging it.
async fn guard_code(
    store: &dyn CallbackStore,
    code: &CodeHash,
    customer: &CustomerId,
    now: OffsetDateTime,
) -> Result<Option<CallbackOutcome>, Error> {
    match store.begin_exchange(code, customer, now).await? {
        ExchangeStart::Started => Ok(None),
        ExchangeStart::Done { customer: owner, connection_id } if owner == *customer => {
            let rec = store.get_connection(&connection_id).await?.ok_or(Error::NotFound("connection"))?;
            Ok(Some(CallbackOutcome { connection: rec.summary(), outcome: Outcome::AlreadyConnected }))
        }
        ExchangeStart::Done { .. } => Err(code_refused()),
        ExchangeStart::InProgress => {
            Err(Error::conflict("exchange_in_progress", "This code is already being exchanged."))
        }
    }
}

/// Step 3: the code exchange, with Finch's answers mapped.
async fn exchange<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    secrets: &FinchSecrets,
    input: &CallbackInput,
    code: &CodeHash,
) -> Result<Traced<TokenResponse>, Error> {
    let redirect_uri = (input.mode == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str());
    match app.finch.exchange_code(secrets, &input.code, redirect_uri).await {
        Ok(t) => Ok(t),
        Err(Error::Finch(e)) if e.status == 400 => {
            tracing::warn!(error = %e, "code exchange refused");
            Err(Error::invalid(
                "code_invalid",
                "The authorization code is invalid, expired or already used; start Connect again.",
            ))
        }
        Err(e @ Error::Finch(_)) if matches!(&e, Error::Finch(f) if f.status == 401) => {
            Err(app.secrets.forget_on_auth_failure(e).await)
        }
        Err(e @ Error::FinchTransport { maybe_sent: false, .. }) => {
            store.abandon_exchange(code).await?;
            Err(e)
        }
        Err(e) => {
            tracing::error!(error = %e.chain(), "code exchange failed after the request may have reached Finch; the next connect attempt for this customer recovers the connection");
            Err(e)
        }
    }
}

/// What Finch told Perch about a new connection besides the token.
struct Learned {
    /// `None` when the introspection failed: the connection is stored as `pending`.
    introspection: Option<Introspection>,
    request_id: Option<String>,
    company_name: Option<String>,
}

/// Step 4: introspection and the company's name; neither failure fails the callback. The
/// request id kept is the introspection's, else the exchange's.
async fn learn<A: Adapters>(app: &AppState<A>, token: &TokenResponse, exchange_request_id: Option<String>) -> Learned {
    let id = &token.connection_id;
    let (introspection, request_id) = match app.finch.introspect(&token.access_token).await {
        Ok(i) => (Some(i.value), i.request_id),
        Err(e) => {
            tracing::warn!(connection_id = %id, error = %e.chain(), "introspect failed; storing the connection as pending");
            (None, exchange_request_id)
        }
    };
    let company_name = company_name(app, id, &token.access_token).await.or_else(|| token.customer_name.clone());
    Learned { introspection, request_id, company_name }
}

async fn company_name<A: Adapters>(app: &AppState<A>, id: &ConnectionId, token: &AccessToken) -> Option<String> {
    match app.finch.company(token).await {
        Ok(Some(c)) => c.value.legal_name,
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(connection_id = %id, error = %e.chain(), "company lookup failed; using the customer name");
            None
        }
    }
}

/// Step 5: the Finch `customer_id` the connection is filed under must be one `customer`
/// claimed. Finch's own answer first; the flow's only when Finch names none.
async fn check_ownership(
    store: &dyn CallbackStore,
    token: &TokenResponse,
    learned: &Learned,
    flow: Option<&PendingFlow>,
    customer: &CustomerId,
) -> Result<FinchCustomerId, Error> {
    let reported =
        token.customer_id.clone().or_else(|| learned.introspection.as_ref().and_then(|i| i.customer_id.clone()));
    let filed_under = match reported {
        // A Finch id Perch could not have claimed (outside its alphabet) is no one's here.
        Some(raw) => FinchCustomerId::parse(raw).ok(),
        None => flow.map(|f| f.finch_customer_id.clone()),
    };
    let owner = match &filed_under {
        Some(id) => store.finch_customer_owner(id).await?,
        None => None,
    };
    match filed_under {
        Some(id) if owner.as_ref() == Some(customer) => Ok(id),
        other => {
            tracing::error!(connection_id = %token.connection_id, finch_customer_id = ?other, "exchanged code belongs to another customer's Finch id; not stored");
            Err(code_refused())
        }
    }
}

/// Everything step 6 writes.
struct NewConnection<'a> {
    customer: CustomerId,
    finch_customer_id: FinchCustomerId,
    token: &'a TokenResponse,
    learned: Learned,
    encrypted: EncryptedToken,
}

impl NewConnection<'_> {
    /// The record to write over `existing` (if any) at `now`.
    fn record(&self, existing: Option<&ConnectionRecord>, now: OffsetDateTime) -> ConnectionRecord {
        let t = self.token;
        let i = self.learned.introspection.as_ref();
        let (status, status_message, last_successful_sync) = match i {
            Some(i) => (
                i.connection_status.status.clone(),
                i.connection_status.message.clone(),
                i.connection_status.last_successful_sync.clone(),
            ),
            None => (ConnectionStatus::Pending, None, None),
        };
        let products: Vec<Product> = i.map_or_else(|| t.products.clone(), |i| i.products.clone());
        let entity_ids = i
            .and_then(|i| i.entities.as_ref())
            .map_or_else(|| t.entity_ids.clone(), |es| es.iter().map(|e| e.id.clone()).collect());
        ConnectionRecord {
            connection_id: t.connection_id.clone(),
            customer: self.customer.clone(),
            finch_customer_id: self.finch_customer_id.clone(),
            provider_id: t.provider_id.clone(),
            company_name: self.learned.company_name.clone(),
            status: status.into(),
            status_message,
            last_successful_sync,
            products,
            entity_ids,
            client_type: i.and_then(|i| i.client_type.clone()).or_else(|| t.client_type.clone()),
            created_at: existing.map_or(now, |r| r.created_at),
            updated_at: now,
            last_finch_request_id: self.learned.request_id.clone(),
            status_observed_at: i.map(|_| now),
            checked_at: existing.and_then(|r| r.checked_at),
            disconnected_at: None,
            version: existing.map_or(1, |r| r.version + 1),
            token: Some(self.encrypted.clone()),
        }
    }
}

/// Step 6: writes the connection (created, or its token replaced at the version read), marks
/// the code done, publishes the change. A lost race re-reads at once; a transient AWS failure
/// waits a little. The token is already exchanged: giving up would cost the employer a
/// reconnect.
async fn save<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    new: &NewConnection<'_>,
    code: &CodeHash,
) -> Result<CallbackOutcome, Error> {
    let id = &new.token.connection_id;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let existing = store.get_connection(id).await?;
        match &existing {
            Some(rec) if rec.customer != new.customer => {
                tracing::error!(connection_id = %id, "connection is held by another customer; not stored");
                return Err(code_refused());
            }
            Some(rec) if rec.is_disconnecting_or_gone() => {
                return Err(Error::conflict("connection_disconnected", "This connection has been disconnected."));
            }
            _ => {}
        }
        let now = OffsetDateTime::now_utc();
        let record = new.record(existing.as_ref(), now);
        match store.save_connection(&record, existing.as_ref().map(|r| r.version), Some(code)).await {
            Ok(saved) => {
                tracing::info!(connection_id = %id, outcome = ?saved, "connection stored");
                let (outcome, source) = match saved {
                    SaveOutcome::Created => (Outcome::Created, ChangeSource::Connect),
                    SaveOutcome::Replaced => (Outcome::Reauthenticated, ChangeSource::Reauthenticate),
                };
                let previous = existing.as_ref().and_then(|r| r.status.finch().cloned());
                if let ConnectionState::Finch(status) = &record.status {
                    app.events.publish(&StatusChanged::of(&record, previous, status.clone(), source, now)).await;
                }
                return Ok(CallbackOutcome { connection: record.summary(), outcome });
            }
            Err(Error::Conflict { .. }) if attempt < SAVE_ATTEMPTS => continue,
            Err(Error::Aws { retryable: true, .. }) if attempt < SAVE_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(connection_id = %id, error = %e.chain(), "token exchanged but not stored; the next connect attempt for this customer recovers the connection");
                return Err(e);
            }
        }
    }
}
