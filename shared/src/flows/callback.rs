//! The end of a Connect flow, as named steps:
//!
//! 1. `consume_state`: verify the state's signature and consume its stored flow — before
//!    anything reaches Finch, once only (a replayed URL finds nothing), and only by the flow
//!    type that issued it. Both flows need a state: without one, anyone signed in could make
//!    Perch spend its client credentials on guessed codes;
//! 2. `guard_code`: mark the code as being exchanged, so a replay gets the stored result or
//!    a 409, never a second exchange;
//! 3. `exchange`: `POST /auth/token`, with Finch's answers mapped: a code Finch refused is the
//!    caller's 400 and frees the mark (so is a failure that provably never reached Finch); a
//!    refused client or redirect URI is Perch's own misconfiguration, a 500 an alarm watches;
//! 4. `learn`: introspect the token (the connection id when the token response has none),
//!    noting when, and read the company, both at once (either may fail: the connection is
//!    then stored as `pending`, or without its legal name, and the sweep fills it in);
//! 5. `owner`: Finch files the connection under a `customer_id`; the customer who claimed it
//!    owns the connection, whoever's state carried the code. A code sent with someone else's
//!    state (or stolen) is refused to the sender, but the connection is still stored for its
//!    owner — whose own callback then finds it — and one nobody claimed is revoked at Finch:
//!    never a billed connection nobody holds, never a stuck mark;
//! 6. `save`: encrypt the token and write the connection — created, or its token replaced at
//!    the version read — and mark the code done, in one transaction; then the status event,
//!    and any status Finch pushed while this callback was in flight.
//!
//! **One connection per employer** (seed 004's composite uniqueness). A new connection claims
//! its employer key — customer, provider, Finch company, entity set — in the transaction that
//! creates it. When another live connection holds that claim, the new one is redundant: it
//! is disconnected at Finch at once (Finch bills per connection), nothing is stored, and the
//! answer is `duplicate` with the existing connection. Two such callbacks at once end with
//! one connection: the transaction lets exactly one claim succeed. A claim whose holder is
//! gone (disconnected, or revoked at Finch) is taken over.
//!
//! **Observations.** The record's status is the introspection's, stamped with when it was
//! asked; a status stored while this callback ran and observed after it asked (a webhook or a
//! status check that landed meanwhile) is kept, never overwritten by the older observation.
//! Both conditions matter: a webhook's time has whole-second resolution, so one stored just
//! *before* a reauthentication (the very `reauth` the employer is fixing) may carry a time in
//! the same second as the callback's introspection.
//!
//! Once the code is exchanged, every failure is logged with the connection id: the next
//! Connect attempt for this customer recovers the connection (Finch answers
//! `connection_already_exists`, see [`super::session`]).

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::{Adapters, AppState};
use crate::crypto::{EncryptedToken, TokenCipher, code_hash, state};
use crate::domain::{
    AccessToken, AuthorizationCode, CodeHash, ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId,
    Error, FinchCustomerId, FinchError, FlowMode, Product,
};
use crate::events::{ChangeSource, StatusChanged};
use crate::finch::Traced;
use crate::finch::types::{Company, Introspection, TokenResponse};
use crate::secrets::FinchSecrets;
use crate::store::{
    CallbackStore, ConnectionRecord, ConnectionSummary, Employer, EntityRecord, ExchangeStart, PendingFlow, Pushed,
    SaveOutcome, employer_key,
};
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
    /// The employer (same provider, company and entities) was already connected: this
    /// connection; the redundant one Connect just made was disconnected at Finch.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Reauthenticated => "reauthenticated",
            Self::AlreadyConnected => "already_connected",
            Self::Duplicate => "duplicate",
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

/// Why Connect ended without a code. Finch's `error` value is logged only when it is a plain
/// OAuth error code; its description is never read (it is text anyone could have put there).
pub fn connect_ended(error: &str) -> Error {
    let plain = !error.is_empty() && error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    tracing::info!(
        connect_error = if plain { error } else { "(not an OAuth error code)" },
        "Connect ended without a code"
    );
    if error == "access_denied" {
        Error::invalid("consent_denied", "The employer did not grant access in Finch Connect.")
    } else {
        Error::invalid("connect_failed", "Finch Connect ended without connecting.")
    }
}

/// Completes a Connect flow (see the module docs).
#[tracing::instrument(skip_all, fields(mode = ?input.mode))]
pub async fn complete_callback<A: Adapters>(app: &AppState<A>, input: CallbackInput) -> Result<CallbackOutcome, Error> {
    let store: &dyn CallbackStore = &*app.store;
    // Refuse what cannot succeed before touching Secrets Manager, DynamoDB or Finch.
    let Some(state_value) = input.state.as_deref() else { return Err(state_gone()) };
    let secrets = app.secrets.get().await?;
    let flow = consume_state(store, &secrets, state_value, &input, app.clock.now()).await?;
    let code = code_hash(secrets.state_key.expose_secret(), &input.code)?;
    if let Some(replayed) = guard_code(store, &code, &flow.customer).await? {
        return Ok(replayed);
    }
    let Traced { value: token, request_id: exchange_request_id } =
        exchange(app, store, &secrets, &input, &code).await?;
    let ahead = Ahead::start(app, store, &token, &flow);
    let (learned, ahead) = tokio::join!(learn(app, &token, exchange_request_id), ahead);
    let learned = learned?;
    let id = learned.connection_id.clone();
    tracing::info!(connection_id = %id, provider = %token.provider_id, "code exchanged");
    let owner = match ahead.owner {
        Some(o) => o?,
        None => owner(store, &token, learned.introspection.as_ref(), &flow).await?,
    };
    let (customer, finch_customer_id) = match owner {
        Owner::Sender(fcid) => (flow.customer.clone(), fcid),
        Owner::Another(owner, fcid) => {
            // The code is another customer's (their flow's code, sent with this state): it
            // is refused here, but the connection is theirs — stored for them, their own
            // callback finds it.
            tracing::warn!(connection_id = %id, "code came with another customer's state; storing the connection for its owner and refusing the sender");
            let new = NewConnection::encrypt(app, owner, fcid, &token, learned, None).await?;
            // `save` logs its own failure; the sender is refused either way.
            if save(app, store, &new, &code, None).await.is_ok() {
                tracing::info!(connection_id = %id, "connection stored for the customer whose code it was");
            }
            return Err(code_refused());
        }
        Owner::Nobody(filed_under) => {
            tracing::error!(connection_id = %id, finch_customer_id = ?filed_under, "exchanged code belongs to no customer of Perch; revoking it at Finch");
            revoke_orphan(app, store, &token.access_token, &id, &code).await;
            return Err(code_refused());
        }
    };
    if let Some(expected) = flow.reauth_of.as_ref()
        && *expected != id
    {
        tracing::warn!(expected = %expected, got = %id, "reauthentication produced a different connection");
    }
    // What was done ahead holds if the connection and customer are the ones it assumed.
    let ready = ahead.encrypted.filter(|_| customer == flow.customer && Some(&id) == token.connection_id.as_ref());
    let existing = ahead.existing.filter(|_| Some(&id) == token.connection_id.as_ref());
    let new = NewConnection::encrypt(app, customer, finch_customer_id, &token, learned, ready).await?;
    save(app, store, &new, &code, existing).await
}

/// What steps 5 and 6 need, done while step 4 asks Finch (see the module docs): when the token
/// response names the connection and the Finch customer (Finch's spec requires both), the
/// owner's lookup, the token encrypted for the customer whose state came with the code (its
/// owner unless someone is attacking), and the stored connection's read. So the callback waits
/// for one Finch round trip after the exchange, not one plus these (BENCHMARKS.md, the
/// callback's critical path). A failure here only means doing it again in order.
struct Ahead {
    owner: Option<Result<Owner, Error>>,
    encrypted: Option<EncryptedToken>,
    existing: Option<Option<ConnectionRecord>>,
}

impl Ahead {
    async fn start<A: Adapters>(
        app: &AppState<A>,
        store: &dyn CallbackStore,
        token: &TokenResponse,
        flow: &PendingFlow,
    ) -> Self {
        let owner = async {
            match token.customer_id {
                Some(_) => Some(owner(store, token, None, flow).await),
                None => None,
            }
        };
        let encrypted = async {
            let id = token.connection_id.as_ref()?;
            app.cipher.encrypt(&token.access_token, id, &flow.customer).await.ok()
        };
        let existing = async {
            let id = token.connection_id.as_ref()?;
            store.get_connection(id).await.ok()
        };
        let (owner, encrypted, existing) = tokio::join!(owner, encrypted, existing);
        Self { owner, encrypted, existing }
    }
}

/// Step 1: the flow the state names, consumed, if its type matches the request's.
async fn consume_state(
    store: &dyn CallbackStore,
    secrets: &FinchSecrets,
    value: &str,
    input: &CallbackInput,
    now: OffsetDateTime,
) -> Result<PendingFlow, Error> {
    let verified = state::verify(secrets.state_key.expose_secret(), value)?;
    store.take_state(verified.id(), now, input.mode, input.caller.as_ref()).await?.ok_or_else(state_gone)
}

/// Step 2: starts the code's exchange, or answers a replay: the stored connection for the same
/// customer, a refusal for anyone else, a 409 while another call is exchanging it.
async fn guard_code(
    store: &dyn CallbackStore,
    code: &CodeHash,
    customer: &CustomerId,
) -> Result<Option<CallbackOutcome>, Error> {
    match store.begin_exchange(code, customer, OffsetDateTime::now_utc()).await? {
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

/// Whether Finch refused Perch's own setup rather than the code: its client credentials, or —
/// when Perch sent its redirect URI — one that is not the session's. (Without one, in the
/// embedded flow, a redirect URI complaint means the code came from a redirect flow: the
/// caller's mistake, not Perch's.)
fn is_configuration_refusal(e: &FinchError, sent_redirect_uri: bool) -> bool {
    e.status == 401
        || e.is_finch_code("invalid_client")
        || e.name.as_deref().is_some_and(|n| n.starts_with("invalid_client"))
        || (sent_redirect_uri && e.message.as_deref().is_some_and(|m| m.to_ascii_lowercase().contains("redirect_uri")))
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
        Err(Error::Finch(e)) if is_configuration_refusal(&e, redirect_uri.is_some()) => {
            // Not the employer's doing, and no new Connect attempt would fare better.
            tracing::error!(
                alarm = "configuration_error", finch_request_id = ?e.request_id, status = e.status, error = %e,
                "Finch refused Perch's client credentials or redirect URI at the code exchange; fix the deployment"
            );
            store.abandon_exchange(code).await?;
            // A 401 may be a rotated client secret: the next call reads the secret again.
            let refused = app.secrets.forget_on_auth_failure(Error::from(*e)).await;
            Err(Error::Configuration(format!("code exchange refused: {}", refused.chain())))
        }
        Err(Error::Finch(e)) if e.status == 400 => {
            // Finch's definitive no: nothing was exchanged, so nothing is left marked.
            tracing::warn!(error = %e, "code exchange refused");
            store.abandon_exchange(code).await?;
            Err(Error::invalid(
                "code_invalid",
                "The authorization code is invalid, expired or already used; start Connect again.",
            ))
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
    connection_id: ConnectionId,
    /// `None` when the introspection failed: the connection is stored as `pending`.
    introspection: Option<Introspection>,
    /// When the introspection was asked for: the time its status was observed.
    observed_at: OffsetDateTime,
    request_id: Option<String>,
    /// `/employer/company`, when it answered with data.
    company: Option<Company>,
}

/// Step 4: introspection and the company, asked at once (both need only the token); neither
/// failure fails the callback unless the token response named no connection (seed 003's
/// example has none): then only the introspection can, and without it the connection cannot
/// be stored. The request id kept is the introspection's, else the exchange's.
async fn learn<A: Adapters>(
    app: &AppState<A>,
    token: &TokenResponse,
    exchange_request_id: Option<String>,
) -> Result<Learned, Error> {
    let observed_at = app.clock.now();
    let (introspected, company) =
        tokio::join!(app.finch.introspect(&token.access_token), app.finch.company(&token.access_token));
    let named = token.connection_id.as_ref().map_or("(unnamed)", ConnectionId::as_str);
    let (introspection, request_id) = match introspected {
        Ok(i) => (Some(i.value), i.request_id),
        Err(e) => match &token.connection_id {
            Some(id) => {
                tracing::warn!(connection_id = %id, error = %e.chain(), "introspect failed; storing the connection as pending");
                (None, exchange_request_id)
            }
            None => {
                tracing::error!(error = %e.chain(), "the token response named no connection and introspect failed; the token is not stored (the next connect attempt for this customer recovers the connection)");
                // The mark stays: the code is spent at Finch, a replay must not look fresh.
                return Err(e);
            }
        },
    };
    let connection_id = match (&token.connection_id, &introspection) {
        (Some(id), _) => id.clone(),
        (None, Some(i)) => i.connection_id.clone(),
        (None, None) => return Err(Error::internal("no connection id after a successful introspection")),
    };
    let company = match company {
        Ok(c) => c.map(|c| c.value),
        Err(e) => {
            tracing::warn!(connection_id = named, error = %e.chain(), "company lookup failed; the status check reads it later");
            None
        }
    };
    Ok(Learned { connection_id, introspection, observed_at, request_id, company })
}

/// The employer as the token response, the introspection and the company describe it.
pub fn employer_of(token: &TokenResponse, i: Option<&Introspection>, company: Option<&Company>) -> Employer {
    Employer {
        company_id: company
            .and_then(|c| c.id.clone())
            .or_else(|| i.and_then(|i| i.company_id.clone()))
            .or_else(|| token.company_id.clone()),
        legal_name: company.and_then(|c| c.legal_name.clone()).filter(|n| !n.trim().is_empty()),
        customer_name: i.and_then(|i| i.customer_name.clone()).or_else(|| token.customer_name.clone()),
        customer_email: i.and_then(|i| i.customer_email.clone()),
        connection_type: i.and_then(|i| i.connection_type.clone()).or_else(|| token.connection_type.clone()),
        authentication_method: i.and_then(Introspection::authentication_method),
    }
}

/// The entities as the introspection lists them (names, source ids, statuses), else the token
/// response's ids, observed at `at`.
pub fn entities_of(token: &TokenResponse, i: Option<&Introspection>, at: OffsetDateTime) -> Vec<EntityRecord> {
    match i.and_then(|i| i.entities.as_ref()) {
        Some(es) => es
            .iter()
            .map(|e| EntityRecord {
                id: e.id.clone(),
                name: e.name.clone(),
                source_id: e.source_id.clone(),
                status: e.status.clone(),
                observed_at: Some(at),
                disconnected_at: None,
            })
            .collect(),
        None => token
            .entity_ids
            .iter()
            .map(|id| EntityRecord {
                id: id.clone(),
                name: None,
                source_id: None,
                status: ConnectionStatus::Pending,
                observed_at: None,
                disconnected_at: None,
            })
            .collect(),
    }
}

/// Who owns an exchanged connection.
enum Owner {
    /// The customer whose state came with the code.
    Sender(FinchCustomerId),
    /// Another customer: it claimed the Finch id the connection is filed under.
    Another(CustomerId, FinchCustomerId),
    /// No customer of Perch (the Finch id it is filed under, if any).
    Nobody(Option<String>),
}

/// Step 5: the customer who claimed the Finch `customer_id` the connection is filed under.
/// Finch's own answer first (the token response's, else the introspection's); the flow's only
/// when Finch names none.
async fn owner(
    store: &dyn CallbackStore,
    token: &TokenResponse,
    introspection: Option<&Introspection>,
    flow: &PendingFlow,
) -> Result<Owner, Error> {
    let reported = token.customer_id.clone().or_else(|| introspection.and_then(|i| i.customer_id.clone()));
    let filed_under = match &reported {
        // A Finch id Perch could not have claimed (outside its alphabet) is no one's here.
        Some(raw) => FinchCustomerId::parse(raw.clone()).ok(),
        None => Some(flow.finch_customer_id.clone()),
    };
    let Some(fcid) = filed_under else { return Ok(Owner::Nobody(reported)) };
    Ok(match store.finch_customer_owner(&fcid).await? {
        Some(c) if c == flow.customer => Owner::Sender(fcid),
        Some(c) => Owner::Another(c, fcid),
        None => Owner::Nobody(Some(fcid.to_string())),
    })
}

/// A connection nobody in Perch can hold: its token revoked at Finch (so it is not billed) and
/// the code's mark cleared. Best effort: on failure the log line is the operator's lead.
async fn revoke_orphan<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    token: &AccessToken,
    id: &ConnectionId,
    code: &CodeHash,
) {
    match app.finch.disconnect(token).await {
        Ok(t) => {
            tracing::info!(connection_id = %id, finch_request_id = ?t.request_id, "orphan connection revoked at Finch")
        }
        Err(e) => {
            tracing::error!(connection_id = %id, error = %e.chain(), "orphan connection could not be revoked at Finch; disconnect it from Finch's dashboard");
        }
    }
    if let Err(e) = store.abandon_exchange(code).await {
        tracing::warn!(connection_id = %id, error = %e.chain(), "code mark not cleared; it expires within the hour");
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

impl<'a> NewConnection<'a> {
    /// Encrypts the token for `customer` (unless `ready` holds it so already); a failure is
    /// logged with the connection id.
    async fn encrypt<A: Adapters>(
        app: &AppState<A>,
        customer: CustomerId,
        finch_customer_id: FinchCustomerId,
        token: &'a TokenResponse,
        learned: Learned,
        ready: Option<EncryptedToken>,
    ) -> Result<Self, Error> {
        let id = &learned.connection_id;
        let encrypted = match ready {
            Some(e) => e,
            None => app.cipher.encrypt(&token.access_token, id, &customer).await.inspect_err(|e| {
                tracing::error!(connection_id = %id, error = %e.chain(), "token exchanged but not stored; the next connect attempt for this customer recovers the connection");
            })?,
        };
        Ok(Self { customer, finch_customer_id, token, learned, encrypted })
    }

    fn id(&self) -> &ConnectionId {
        &self.learned.connection_id
    }

    /// The record to write over `existing` (if any) at `now`. A status `existing` holds that
    /// was observed after this callback's introspection is kept (see the module docs).
    fn record(&self, existing: Option<&ConnectionRecord>, now: OffsetDateTime) -> ConnectionRecord {
        let t = self.token;
        let i = self.learned.introspection.as_ref();
        let ours = i.map(|i| {
            (
                ConnectionState::from(i.connection_status.status.clone()),
                i.connection_status.message.clone(),
                i.connection_status.last_successful_sync.clone(),
                Some(self.learned.observed_at),
            )
        });
        let stored = existing.filter(|r| !r.is_disconnecting_or_gone()).and_then(|r| {
            let asked = self.learned.observed_at;
            let newer = match ours {
                // Nothing observed here: whatever was observed before stands.
                None => r.status_observed_at.is_some(),
                // Stored while this callback ran, and observed after it asked. (Written before
                // the callback began, it is what the employer just reconnected from; a late
                // redelivery of an old event is observed before.)
                Some(_) => r.updated_at > asked && r.status_observed_at.is_some_and(|at| at > asked),
            };
            newer.then(|| {
                (r.status.clone(), r.status_message.clone(), r.last_successful_sync.clone(), r.status_observed_at)
            })
        });
        let (status, status_message, last_successful_sync, status_observed_at) =
            stored.or(ours).unwrap_or((ConnectionStatus::Pending.into(), None, None, None));
        let products: Vec<Product> = i.map_or_else(|| t.products.clone(), |i| i.products.clone());
        let mut employer = employer_of(t, i, self.learned.company.as_ref());
        if let Some(old) = existing {
            // What Finch did not say this time is still true (a 202 on the company).
            let keep = |now: &mut Option<String>, before: &Option<String>| {
                if now.is_none() {
                    now.clone_from(before);
                }
            };
            keep(&mut employer.company_id, &old.employer.company_id);
            keep(&mut employer.legal_name, &old.employer.legal_name);
            keep(&mut employer.customer_email, &old.employer.customer_email);
        }
        let mut entities = entities_of(t, i, self.learned.observed_at);
        if entities.is_empty()
            && let Some(old) = existing
        {
            entities.clone_from(&old.entities);
        }
        let live: Vec<&EntityId> = entities.iter().filter(|e| e.is_live()).map(|e| &e.id).collect();
        let key = match existing {
            // A reauthentication keeps the claim the connection holds.
            Some(old) => old.employer_key.clone(),
            None => employer_key(&self.customer, &t.provider_id, employer.company_id.as_deref(), &live),
        };
        ConnectionRecord {
            connection_id: self.id().clone(),
            customer: self.customer.clone(),
            finch_customer_id: self.finch_customer_id.clone(),
            provider_id: t.provider_id.clone(),
            employer,
            entities,
            employer_key: key,
            refresh_requested_at: None,
            status,
            status_message,
            last_successful_sync,
            products,
            client_type: i.and_then(|i| i.client_type.clone()).or_else(|| t.client_type.clone()),
            created_at: existing.map_or(now, |r| r.created_at),
            updated_at: now,
            last_finch_request_id: self.learned.request_id.clone(),
            status_observed_at,
            checked_at: existing.and_then(|r| r.checked_at),
            disconnected_at: None,
            disconnect_lease: None,
            version: existing.map_or(1, |r| r.version + 1),
            token: Some(self.encrypted.clone()),
        }
    }
}

/// Step 6: writes the connection (created, or its token replaced at the version read), marks
/// the code done, publishes the change, then applies a status Finch pushed before the
/// connection existed. A lost race re-reads at once; a transient AWS failure waits a little.
/// The token is already exchanged: giving up would cost the employer a reconnect.
async fn save<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    new: &NewConnection<'_>,
    code: &CodeHash,
    mut read_ahead: Option<Option<ConnectionRecord>>,
) -> Result<CallbackOutcome, Error> {
    let id = new.id();
    let mut attempt = 0;
    let mut take_claim_from: Option<ConnectionId> = None;
    loop {
        attempt += 1;
        // The first attempt may use the read made ahead: its version guards the write all the same.
        let existing = match read_ahead.take() {
            Some(r) => r,
            None => store.get_connection(id).await?,
        };
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
        let saved =
            store.save_connection(&record, existing.as_ref().map(|r| r.version), Some(code), take_claim_from.as_ref());
        match saved.await {
            Ok(SaveOutcome::ClaimedBy(holder)) if attempt < SAVE_ATTEMPTS => {
                match store.get_connection(&holder).await? {
                    Some(h) if h.customer == new.customer && h.is_live_at_finch() => {
                        return duplicate(app, store, new, code, h).await;
                    }
                    // Its holder is gone: the claim is taken over on the next attempt.
                    _ => take_claim_from = Some(holder),
                }
            }
            Ok(SaveOutcome::ClaimedBy(holder)) => {
                tracing::error!(connection_id = %id, holder = %holder, "employer claim kept changing hands; not stored");
                return Err(Error::conflict(
                    "connection_changed",
                    "The connection changed while it was being saved; try again.",
                ));
            }
            Ok(saved) => {
                tracing::info!(connection_id = %id, outcome = ?saved, "connection stored");
                let (outcome, source) = match saved {
                    SaveOutcome::Replaced => (Outcome::Reauthenticated, ChangeSource::Reauthenticate),
                    _ => (Outcome::Created, ChangeSource::Connect),
                };
                let previous = existing.as_ref().and_then(|r| r.status.finch().cloned());
                if let ConnectionState::Finch(status) = &record.status {
                    app.events.publish(&StatusChanged::of(&record, previous, status.clone(), source, now)).await;
                }
                crate::flows::sync::after_connect(app, store, &record).await;
                let mut summary = record.summary();
                if saved == SaveOutcome::Created
                    && let Some(applied) = apply_parked(app, store, id).await
                {
                    summary = applied;
                }
                return Ok(CallbackOutcome { connection: summary, outcome });
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

/// The employer was connected already (`existing` holds its claim): the connection Connect just
/// made is disconnected at Finch — it would be billed — and the code finished into `existing`,
/// so a replay answers with it. Nothing else is written.
async fn duplicate<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    new: &NewConnection<'_>,
    code: &CodeHash,
    existing: ConnectionRecord,
) -> Result<CallbackOutcome, Error> {
    let id = new.id();
    match app.finch.disconnect(&new.token.access_token).await {
        Ok(t) => tracing::info!(
            connection_id = %id, existing = %existing.connection_id, finch_request_id = ?t.request_id,
            "redundant connection of an employer already connected disconnected at Finch"
        ),
        Err(e) => tracing::error!(
            connection_id = %id, existing = %existing.connection_id, error = %e.chain(),
            "redundant connection could not be disconnected at Finch; disconnect it from Finch's dashboard to stop billing"
        ),
    }
    if let Err(e) = store.finish_exchange(code, &new.customer, &existing.connection_id).await {
        tracing::warn!(connection_id = %id, error = %e.chain(), "code mark not finished; it expires within the hour");
    }
    Ok(CallbackOutcome { connection: existing.summary(), outcome: Outcome::Duplicate })
}

/// A status Finch pushed while the connection was being created (the webhook parked it),
/// applied now by the same rule as the webhook's; the connection as it is then. A failure here
/// leaves the status to the next check: the connection itself is stored.
async fn apply_parked<A: Adapters>(
    app: &AppState<A>,
    store: &dyn CallbackStore,
    id: &ConnectionId,
) -> Option<ConnectionSummary> {
    let parked = match store.take_parked_status(id).await {
        Ok(p) => p?,
        Err(e) => {
            tracing::warn!(connection_id = %id, error = %e.chain(), "parked status not read; the status check catches up");
            return None;
        }
    };
    match store.apply_pushed_status(id, &parked.status, parked.observed_at, &parked.event).await {
        Ok(Pushed::Applied(old)) => {
            tracing::info!(connection_id = %id, event_id = %parked.event, status = parked.status.as_str(), "status pushed during the callback applied");
            let previous = old.status.finch().cloned();
            let change = StatusChanged::of(&old, previous, parked.status, ChangeSource::Webhook, parked.observed_at);
            app.events.publish(&change).await;
            store.get_connection(id).await.ok().flatten().map(|r| r.summary())
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(connection_id = %id, error = %e.chain(), "parked status not applied; the status check catches up");
            None
        }
    }
}
