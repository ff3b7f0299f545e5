//! The Connect flow: sessions, the callback's code exchange, and the customer's connections.
//!
//! **Finch `customer_id`s.** Finch wants one stable id per employer, reused across retries and
//! drop-offs, and a new one only for an *additional* provider or entity set. Perch derives it
//! from the caller's customer and a slot: slot 1 is `acme`, slot *n* is `acme-n`. A plain
//! create-session always uses the customer's first claimable slot, so retries land on the same
//! Finch staged session; `additional: true` moves to the lowest slot that has no connection yet
//! — itself stable until a connection lands there.
//!
//! **`connection_already_exists`.** When Finch already has a connection for that id — one Perch
//! holds, or one whose token was exchanged but never stored — Perch answers with a
//! re-authentication session for it instead of an error. Completing it brings the connection
//! (back) under Perch with a fresh token, so no Finch connection is left orphaned.
//!
//! **The callback** verifies and consumes the state before anything reaches Finch, marks the
//! code as being exchanged (a replay gets the stored result or a 409, never a second exchange),
//! checks that Finch filed the connection under a `customer_id` this customer owns, and writes
//! the connection and its KMS-encrypted token in one transaction.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::error::Error;
use crate::finch::types::{CreateSessionRequest, Integration, ReauthenticateRequest};
use crate::state_token;
use crate::store::{ConnectionRecord, ConnectionSummary, ExchangeStart, FlowMode, Page, PendingFlow, SaveOutcome};
use crate::types::{
    AuthorizationCode, ConnectionId, ConnectionStatus, CustomerId, FinchCustomerId, Product, SandboxMode,
};

/// Finch's bound on `minutes_to_expire` (90 days).
const MAX_MINUTES_TO_EXPIRE: u32 = 129_600;
/// How many slots create-session will look at before giving up.
const MAX_SLOTS: u32 = 50;
/// How many times a save that lost a race is retried.
const SAVE_ATTEMPTS: u32 = 3;

/// `POST /connect/sessions` body. Unknown fields are refused, so a typo is not silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSessionRequest {
    #[serde(default = "default_flow")]
    pub flow: FlowMode,
    pub products: Vec<Product>,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub sandbox: Option<SandboxMode>,
    #[serde(default)]
    pub integration: Option<Integration>,
    #[serde(default)]
    pub manual: Option<bool>,
    #[serde(default)]
    pub minutes_to_expire: Option<u32>,
    /// Connect an additional provider or entity set under a new Finch `customer_id`.
    #[serde(default)]
    pub additional: bool,
}

fn default_flow() -> FlowMode {
    FlowMode::Redirect
}

/// What create-session returns.
#[derive(Debug, Clone, Serialize)]
pub struct NewSession {
    pub session_id: String,
    /// For the redirect flow, carries Perch's `state`.
    pub connect_url: String,
    pub flow: FlowMode,
    /// For the embedded flow: pass to the Connect SDK's `open({ state })`, then back to us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub finch_customer_id: FinchCustomerId,
    /// Set when Finch already had a connection for this customer id and the session
    /// re-authenticates it instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauthenticates: Option<ConnectionId>,
}

impl NewSessionRequest {
    /// Checks everything Finch would refuse, before Finch is called.
    pub fn validate(&self) -> Result<(), Error> {
        if self.products.is_empty() {
            return Err(Error::invalid("invalid_products", "`products` must name at least one Finch product."));
        }
        let mut seen = std::collections::HashSet::new();
        if !self.products.iter().all(|p| seen.insert(*p)) {
            return Err(Error::invalid("invalid_products", "`products` lists a product twice."));
        }
        if seen.contains(&Product::Deduction) && seen.contains(&Product::Benefits) {
            return Err(Error::invalid("invalid_products", "`deduction` is an alias of `benefits`; send only one."));
        }
        if let Some(name) = &self.customer_name
            && (name.trim().is_empty() || name.chars().count() > 255)
        {
            return Err(Error::invalid("invalid_customer_name", "`customer_name` must be 1 to 255 characters."));
        }
        if let Some(email) = &self.customer_email {
            let ok = email.len() <= 254
                && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
                && !email.chars().any(char::is_whitespace);
            if !ok {
                return Err(Error::invalid("invalid_customer_email", "`customer_email` is not an email address."));
            }
        }
        if let Some(m) = self.minutes_to_expire
            && !(1..=MAX_MINUTES_TO_EXPIRE).contains(&m)
        {
            return Err(Error::invalid(
                "invalid_minutes_to_expire",
                "`minutes_to_expire` must be between 1 and 129600.",
            ));
        }
        if let Some(i) = &self.integration {
            let ok = !i.provider.is_empty()
                && i.provider.len() <= 64
                && i.provider.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !ok {
                return Err(Error::invalid(
                    "invalid_integration",
                    "`integration.provider` must be a Finch provider id.",
                ));
            }
        }
        Ok(())
    }
}

/// Creates a Connect session for `customer` (from the JWT, never the body).
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn create_session(
    app: &AppState,
    customer: &CustomerId,
    req: &NewSessionRequest,
) -> Result<NewSession, Error> {
    req.validate()?;
    let secrets = app.secrets.get().await?;
    let finch_customer_id = claim_slot(app, customer, req.additional).await?;
    let redirect_uri = (req.flow == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str());
    let customer_name = req.customer_name.as_deref().unwrap_or(customer.as_str());

    let body = CreateSessionRequest {
        customer_id: finch_customer_id.as_str(),
        customer_name,
        products: &req.products,
        customer_email: req.customer_email.as_deref(),
        redirect_uri,
        minutes_to_expire: req.minutes_to_expire,
        sandbox: req.sandbox,
        manual: req.manual,
        integration: req.integration.as_ref(),
    };
    let (session, reauth_of) = match app.finch.create_connect_session(&secrets, &body).await {
        Ok(s) => (s.value, None),
        Err(Error::Finch(e)) if e.is_finch_code("connection_already_exists") => {
            let existing = e
                .context_connection_id
                .as_deref()
                .ok_or_else(|| Error::internal("connection_already_exists without context.connection_id"))
                .and_then(|c| Ok(ConnectionId::parse(c)?))?;
            if let Some(rec) = app.store.get_connection(&existing).await? {
                if rec.customer != *customer {
                    return Err(Error::internal(format!(
                        "Finch customer id {finch_customer_id} of {customer} maps to connection {existing} owned by another customer"
                    )));
                }
            } else {
                tracing::warn!(connection_id = %existing, finch_customer_id = %finch_customer_id, "Finch has a connection Perch does not hold; re-authenticating to recover it");
            }
            let body = ReauthenticateRequest {
                connection_id: existing.as_str(),
                minutes_to_expire: req.minutes_to_expire,
                products: Some(&req.products),
                redirect_uri,
            };
            let s = app.finch.reauthenticate_session(&secrets, &body).await?;
            (s.value, Some(existing))
        }
        Err(e) => return Err(forget_secret_on_auth_failure(app, e).await),
    };

    start_flow(app, &secrets, customer, finch_customer_id, session, req.flow, reauth_of, req.minutes_to_expire).await
}

/// Stores a pending flow for a new Finch session and hands out its state: in the
/// `connect_url` for the redirect flow, beside it for the embedded flow.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_flow(
    app: &AppState,
    secrets: &crate::secrets::FinchSecrets,
    customer: &CustomerId,
    finch_customer_id: FinchCustomerId,
    session: crate::finch::types::ConnectSession,
    mode: FlowMode,
    reauth_of: Option<ConnectionId>,
    minutes_to_expire: Option<u32>,
) -> Result<NewSession, Error> {
    let (state_value, state) = state_token::issue(secrets.state_key.expose_secret())?;
    let ttl = match minutes_to_expire {
        Some(m) => app.config.state_ttl.min(std::time::Duration::from_secs(u64::from(m) * 60)),
        None => app.config.state_ttl,
    };
    let flow = PendingFlow {
        customer: customer.clone(),
        finch_customer_id: finch_customer_id.clone(),
        session_id: session.session_id.clone(),
        mode,
        reauth_of: reauth_of.clone(),
        expires_at: OffsetDateTime::now_utc() + ttl,
    };
    app.store.put_state(state.id(), &flow).await?;

    let (connect_url, state) = match mode {
        FlowMode::Redirect => {
            let mut url = url::Url::parse(&session.connect_url)
                .map_err(|e| Error::internal_from("Finch returned an unparseable connect_url", e))?;
            url.query_pairs_mut().append_pair("state", &state_value);
            (url.to_string(), None)
        }
        FlowMode::Embedded => (session.connect_url, Some(state_value)),
    };
    tracing::info!(finch_customer_id = %finch_customer_id, session_id = %session.session_id, reauth = reauth_of.is_some(), "connect session created");
    Ok(NewSession {
        session_id: session.session_id,
        connect_url,
        flow: mode,
        state,
        finch_customer_id,
        reauthenticates: reauth_of,
    })
}

/// A 401 on a client-authenticated call means the cached client secret is stale (rotated):
/// drop it so the next request reads the current one.
pub(crate) async fn forget_secret_on_auth_failure(app: &AppState, e: Error) -> Error {
    if matches!(&e, Error::Finch(f) if f.status == 401) {
        app.secrets.invalidate().await;
    }
    e
}

/// Picks and claims the Finch `customer_id` for this session (see the module docs).
async fn claim_slot(app: &AppState, customer: &CustomerId, additional: bool) -> Result<FinchCustomerId, Error> {
    let taken: std::collections::HashSet<FinchCustomerId> = if additional {
        all_connections(app, customer).await?.into_iter().map(|c| c.finch_customer_id).collect()
    } else {
        Default::default()
    };
    for slot in 1..=MAX_SLOTS {
        let id = FinchCustomerId::for_slot(customer, slot);
        if taken.contains(&id) {
            continue;
        }
        if app.store.claim_finch_customer(&id, customer, slot).await? {
            return Ok(id);
        }
    }
    Err(Error::conflict("too_many_connections", format!("A customer can hold at most {MAX_SLOTS} connection slots.")))
}

/// Every connection of a customer (bounded by the slot limit in practice).
async fn all_connections(app: &AppState, customer: &CustomerId) -> Result<Vec<ConnectionSummary>, Error> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = app.store.list_connections(customer, 100, cursor.as_deref()).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) if out.len() < 10_000 => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

/// What the callback received.
#[derive(Debug)]
pub struct CallbackInput {
    pub code: AuthorizationCode,
    pub state: Option<String>,
    pub mode: FlowMode,
    /// The JWT's customer (embedded flow); `None` for the browser redirect.
    pub caller: Option<CustomerId>,
}

/// What the callback did.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackOutcome {
    pub connection: ConnectionSummary,
    /// `created`, `reauthenticated`, or `already_connected` for a replayed code.
    pub outcome: &'static str,
}

/// Checks a code's shape before it goes anywhere.
pub fn parse_code(raw: &str) -> Result<AuthorizationCode, Error> {
    if raw.is_empty() || raw.len() > 512 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid("code_invalid", "The authorization code is missing or malformed."));
    }
    Ok(AuthorizationCode::new(raw))
}

fn code_hash(key: &[u8], code: &AuthorizationCode) -> Result<String, Error> {
    // Keyed, so a table dump cannot be used to confirm a guessed code.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Error::internal("state key rejected by HMAC"))?;
    mac.update(b"perch-code-v1.");
    mac.update(code.expose_secret().as_bytes());
    Ok(mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect())
}

/// Completes a Connect flow: state, exchange, ownership, introspection, encrypted storage.
#[tracing::instrument(skip_all, fields(mode = ?input.mode))]
pub async fn complete_callback(app: &AppState, input: CallbackInput) -> Result<CallbackOutcome, Error> {
    let state_gone =
        || Error::invalid("state_invalid", "The state is missing, expired or already used; start Connect again.");
    // Refuse what cannot succeed before touching Secrets Manager, DynamoDB or Finch.
    if input.state.is_none() && (input.mode == FlowMode::Redirect || input.caller.is_none()) {
        return Err(state_gone());
    }
    let secrets = app.secrets.get().await?;
    let now = OffsetDateTime::now_utc();

    let flow = match (&input.state, input.mode) {
        (None, FlowMode::Redirect) => return Err(state_gone()),
        (None, FlowMode::Embedded) => None,
        (Some(value), _) => {
            let verified = state_token::verify(secrets.state_key.expose_secret(), value)?;
            let flow = app.store.take_state(verified.id(), now, input.caller.as_ref()).await?.ok_or_else(state_gone)?;
            if flow.mode != input.mode {
                return Err(state_gone());
            }
            Some(flow)
        }
    };
    let customer = match (&flow, &input.caller) {
        (Some(f), _) => f.customer.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => return Err(state_gone()),
    };

    let hash = code_hash(secrets.state_key.expose_secret(), &input.code)?;
    match app.store.begin_exchange(&hash, &customer, now).await? {
        ExchangeStart::Started => {}
        ExchangeStart::Done { customer: owner, connection_id } if owner == customer => {
            let rec = app.store.get_connection(&connection_id).await?.ok_or(Error::NotFound("connection"))?;
            return Ok(CallbackOutcome { connection: summary(&rec), outcome: "already_connected" });
        }
        ExchangeStart::Done { .. } => {
            return Err(Error::invalid("code_invalid", "The authorization code is invalid, expired or already used."));
        }
        ExchangeStart::InProgress => {
            return Err(Error::conflict("exchange_in_progress", "This code is already being exchanged."));
        }
    }

    let redirect_uri = (input.mode == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str());
    let token = match app.finch.exchange_code(&secrets, &input.code, redirect_uri).await {
        Ok(t) => t,
        Err(Error::Finch(e)) if e.status == 400 => {
            tracing::warn!(error = %e, "code exchange refused");
            return Err(Error::invalid(
                "code_invalid",
                "The authorization code is invalid, expired or already used; start Connect again.",
            ));
        }
        Err(e @ Error::Finch(_)) if matches!(&e, Error::Finch(f) if f.status == 401) => {
            return Err(forget_secret_on_auth_failure(app, e).await);
        }
        Err(e @ Error::FinchTransport { maybe_sent: false, .. }) => {
            app.store.abandon_exchange(&hash).await?;
            return Err(e);
        }
        Err(e) => {
            tracing::error!(error = %e.chain(), "code exchange failed after the request may have reached Finch; the next connect attempt for this customer recovers the connection");
            return Err(e);
        }
    };
    let exchange_request_id = token.request_id.clone();
    let token = token.value;
    let connection_id = token.connection_id.clone();
    tracing::info!(connection_id = %connection_id, provider = %token.provider_id, "code exchanged");

    let introspection = match app.finch.introspect(&token.access_token).await {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(connection_id = %connection_id, error = %e.chain(), "introspect failed; storing the connection as pending");
            None
        }
    };

    // Finch files the connection under the customer_id the session was created with; it must
    // be one this customer claimed, or the code came from someone else's flow.
    let finch_customer = token
        .customer_id
        .clone()
        .or_else(|| introspection.as_ref().and_then(|i| i.value.customer_id.clone()))
        .or_else(|| flow.as_ref().map(|f| f.finch_customer_id.to_string()));
    let owner = match &finch_customer {
        Some(id) => app.store.finch_customer_owner(id).await?,
        None => None,
    };
    if owner.as_ref() != Some(&customer) {
        tracing::error!(connection_id = %connection_id, finch_customer_id = ?finch_customer, "exchanged code belongs to another customer's Finch id; not stored");
        return Err(Error::invalid("code_invalid", "The authorization code is invalid, expired or already used."));
    }
    let finch_customer_id = FinchCustomerId::parse(finch_customer.unwrap_or_default())?;
    if let Some(f) = &flow
        && let Some(expected) = &f.reauth_of
        && *expected != connection_id
    {
        tracing::warn!(expected = %expected, got = %connection_id, "reauthentication produced a different connection");
    }

    let company_name = match app.finch.company(&token.access_token).await {
        Ok(Some(c)) => c.value.legal_name,
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(connection_id = %connection_id, error = %e.chain(), "company lookup failed; using the customer name");
            None
        }
    }
    .or_else(|| token.customer_name.clone());

    let (status, status_message, last_sync, products, entity_ids, client_type, request_id) = match &introspection {
        Some(i) => (
            i.value.connection_status.status.clone(),
            i.value.connection_status.message.clone(),
            i.value.connection_status.last_successful_sync.clone(),
            i.value.products.clone(),
            i.value
                .entities
                .as_ref()
                .map(|es| es.iter().map(|e| e.id.clone()).collect())
                .unwrap_or_else(|| token.entity_ids.clone()),
            i.value.client_type.clone().or_else(|| token.client_type.clone()),
            i.request_id.clone(),
        ),
        None => (
            ConnectionStatus::Pending,
            None,
            None,
            token.products.clone(),
            token.entity_ids.clone(),
            token.client_type.clone(),
            exchange_request_id,
        ),
    };

    let encrypted = app.cipher.encrypt(&token.access_token, &connection_id, &customer).await.inspect_err(|e| {
        tracing::error!(connection_id = %connection_id, error = %e.chain(), "token exchanged but not stored; the next connect attempt for this customer recovers the connection");
    })?;

    let mut attempt = 0;
    loop {
        attempt += 1;
        let existing = app.store.get_connection(&connection_id).await?;
        let now = OffsetDateTime::now_utc();
        let (created_at, expected, checked_at) = match &existing {
            None => (now, None, None),
            Some(rec) if rec.customer == customer && rec.is_disconnecting_or_gone() => {
                return Err(Error::conflict("connection_disconnected", "This connection has been disconnected."));
            }
            Some(rec) if rec.customer == customer => (rec.created_at, Some(rec.version), rec.checked_at),
            Some(_) => {
                tracing::error!(connection_id = %connection_id, "connection is held by another customer; not stored");
                return Err(Error::invalid(
                    "code_invalid",
                    "The authorization code is invalid, expired or already used.",
                ));
            }
        };
        let record = ConnectionRecord {
            connection_id: connection_id.clone(),
            customer: customer.clone(),
            finch_customer_id: finch_customer_id.clone(),
            provider_id: token.provider_id.clone(),
            company_name: company_name.clone(),
            status: status.clone(),
            status_message: status_message.clone(),
            last_successful_sync: last_sync.clone(),
            products: products.clone(),
            entity_ids: entity_ids.clone(),
            client_type: client_type.clone(),
            created_at,
            updated_at: now,
            last_finch_request_id: request_id.clone(),
            status_observed_at: introspection.as_ref().map(|_| now),
            checked_at,
            disconnected_at: None,
            version: expected.map_or(1, |v| v + 1),
            token: Some(encrypted.clone()),
        };
        match app.store.save_connection(&record, expected, Some(&hash)).await {
            Ok(outcome) => {
                tracing::info!(connection_id = %connection_id, outcome = ?outcome, "connection stored");
                app.events
                    .publish(&crate::events::StatusChanged {
                        connection_id: connection_id.clone(),
                        customer_id: customer.clone(),
                        provider_id: record.provider_id.clone(),
                        previous_status: existing.as_ref().map(|r| r.status.clone()),
                        status: record.status.clone(),
                        source: if existing.is_some() { "reauthenticate" } else { "connect" },
                        observed_at: now,
                    })
                    .await;
                let outcome = match outcome {
                    SaveOutcome::Created => "created",
                    SaveOutcome::Replaced => "reauthenticated",
                };
                return Ok(CallbackOutcome { connection: summary(&record), outcome });
            }
            // A lost race re-reads at once; a transient AWS failure waits a little. The token is
            // already exchanged: giving up here would cost the employer a reconnect.
            Err(Error::Conflict { .. }) if attempt < SAVE_ATTEMPTS => continue,
            Err(Error::Aws { retryable: true, .. }) if attempt < SAVE_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(connection_id = %connection_id, error = %e.chain(), "token exchanged but not stored; the next connect attempt for this customer recovers the connection");
                return Err(e);
            }
        }
    }
}

pub(crate) fn summary(r: &ConnectionRecord) -> ConnectionSummary {
    ConnectionSummary {
        checked_at: r.checked_at,
        connection_id: r.connection_id.clone(),
        provider_id: r.provider_id.clone(),
        company_name: r.company_name.clone(),
        status: r.status.clone(),
        products: r.products.clone(),
        entity_ids: r.entity_ids.clone(),
        finch_customer_id: r.finch_customer_id.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Default and maximum page size of `GET /connections`.
pub const PAGE_DEFAULT: i32 = 50;
pub const PAGE_MAX: i32 = 100;

/// One page of the caller's connections.
pub async fn list_connections(
    app: &AppState,
    customer: &CustomerId,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<Page, Error> {
    let limit = match limit {
        None => PAGE_DEFAULT,
        Some(l) => l.parse::<i32>().ok().filter(|l| (1..=PAGE_MAX).contains(l)).ok_or_else(|| {
            Error::invalid("invalid_limit", format!("`limit` must be an integer from 1 to {PAGE_MAX}."))
        })?,
    };
    app.store.list_connections(customer, limit, cursor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<NewSessionRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn session_requests_are_validated_before_finch() {
        assert!(req(r#"{"products":["company"]}"#).unwrap().validate().is_ok());
        assert!(req(r#"{"products":[]}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["payroll"]}"#).is_err());
        assert!(req(r#"{"products":["company"],"customer_id":"evil"}"#).is_err(), "customer never comes from the body");
        assert!(req(r#"{"products":["company","company"]}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["benefits","deduction"]}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["company"],"minutes_to_expire":0}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["company"],"minutes_to_expire":129601}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["company"],"sandbox":"true"}"#).is_err());
        assert!(req(r#"{"products":["company"],"integration":{"provider":"gusto","auth_method":"sso"}}"#).is_err());
        assert!(req(r#"{"products":["company"],"integration":{"provider":"Gusto!"}}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["company"],"customer_email":"not-an-email"}"#).unwrap().validate().is_err());
        assert!(req(r#"{"products":["company"],"flow":"popup"}"#).is_err());
    }

    #[test]
    fn codes_are_shape_checked() {
        assert!(parse_code("abc-123").is_ok());
        assert!(parse_code("").is_err());
        assert!(parse_code("has space").is_err());
        assert!(parse_code(&"x".repeat(513)).is_err());
    }

    #[test]
    fn code_hashes_are_keyed() {
        let c = AuthorizationCode::new("code-1");
        let a = code_hash(&[1u8; 32], &c).unwrap();
        assert_ne!(a, code_hash(&[2u8; 32], &c).unwrap());
        assert!(!a.contains("code-1"));
    }
}
