//! Connect sessions, and the customer's connections.
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
//! **States.** Every session, new or re-authenticating, hands out a signed single-use state
//! ([`crate::crypto::state`]) whose flow is stored before the URL leaves Perch: in the
//! `connect_url` for the redirect flow, beside it for the embedded flow.

use std::collections::HashSet;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::app::{Adapters, AppState};
use crate::crypto::state;
use crate::domain::session::{known_products, validate_minutes_to_expire, validate_products};
use crate::domain::{
    ConnectionId, CustomerId, DEFAULT_MINUTES_TO_EXPIRE, Error, FinchCustomerId, FlowMode, Product, SandboxMode,
    SessionId,
};
use crate::finch::types::{ConnectSession, CreateSessionRequest, Integration, ReauthenticateRequest};
use crate::secrets::FinchSecrets;
use crate::store::{ConnectionSummary, IssueState, ListConnections, Page, ReadConnection, SessionStore};

/// How many slots create-session will look at before giving up.
const MAX_SLOTS: u32 = 50;
/// Default and maximum page size of `GET /connections`.
pub const PAGE_DEFAULT: i32 = 50;
pub const PAGE_MAX: i32 = 100;

/// `POST /connect/sessions` body. Unknown fields are refused, so a typo is not silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSessionRequest {
    #[serde(default = "default_flow")]
    pub flow: FlowMode,
    #[serde(deserialize_with = "known_products")]
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

/// What create-session (and create-reauth-session) returns.
#[derive(Debug, Clone, Serialize)]
pub struct NewSession {
    pub session_id: SessionId,
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
        validate_products(&self.products)?;
        if let Some(name) = &self.customer_name
            && (name.trim().is_empty() || name.chars().count() > 255 || name.chars().any(misleading))
        {
            return Err(Error::invalid(
                "invalid_customer_name",
                "`customer_name` must be 1 to 255 characters, without control or text-direction characters.",
            ));
        }
        if let Some(email) = &self.customer_email {
            let ok = email.len() <= 254
                && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
                && !email.chars().any(char::is_whitespace);
            if !ok {
                return Err(Error::invalid("invalid_customer_email", "`customer_email` is not an email address."));
            }
        }
        validate_minutes_to_expire(self.minutes_to_expire)?;
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

/// A character that has no place in a name an employer is shown: controls (NUL, CR/LF, …) and
/// the bidirectional overrides and isolates that can make text read differently from what it
/// is (`U+202A`–`U+202E`, `U+2066`–`U+2069`, and the marks `U+200E`/`U+200F`).
fn misleading(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Creates a Connect session for `customer` (from the JWT, never the body).
#[tracing::instrument(skip_all, fields(customer = %customer))]
pub async fn create_session<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    req: &NewSessionRequest,
) -> Result<NewSession, Error> {
    let store: &dyn SessionStore = &*app.store;
    req.validate()?;
    let secrets = app.secrets.get().await?;
    let finch_customer_id = claim_slot(store, customer, req.additional).await?;
    let redirect_uri = (req.flow == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str());
    let body = CreateSessionRequest {
        customer_id: finch_customer_id.as_str(),
        customer_name: req.customer_name.as_deref().unwrap_or(customer.as_str()),
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
            let session = recover_existing(app, store, &secrets, customer, &finch_customer_id, &existing, req).await?;
            (session, Some(existing))
        }
        Err(e) => return Err(app.secrets.forget_on_auth_failure(e).await),
    };
    let pending = Pending { customer, finch_customer_id, session, mode: req.flow, reauth_of };
    start_flow(app, store, store, &secrets, pending, req.minutes_to_expire).await
}

/// Finch already holds a connection under this customer's Finch id: a re-authentication
/// session for it, after checking that Perch does not hold it for someone else.
async fn recover_existing<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SessionStore,
    secrets: &FinchSecrets,
    customer: &CustomerId,
    finch_customer_id: &FinchCustomerId,
    existing: &ConnectionId,
    req: &NewSessionRequest,
) -> Result<ConnectSession, Error> {
    match store.get_connection(existing).await? {
        Some(rec) if rec.customer != *customer => {
            return Err(Error::internal(format!(
                "Finch customer id {finch_customer_id} of {customer} maps to connection {existing} owned by another customer"
            )));
        }
        Some(rec) if rec.is_disconnecting_or_gone() => {
            // Being disconnected (Finch has not confirmed yet): no session to bring it back.
            return Err(crate::store::disconnecting_conflict());
        }
        Some(_) => {}
        None => {
            tracing::warn!(connection_id = %existing, finch_customer_id = %finch_customer_id, "Finch has a connection Perch does not hold; re-authenticating to recover it");
        }
    }
    let body = ReauthenticateRequest {
        connection_id: existing.as_str(),
        minutes_to_expire: req.minutes_to_expire,
        products: Some(&req.products),
        redirect_uri: (req.flow == FlowMode::Redirect).then(|| app.config.redirect_uri.as_str()),
    };
    Ok(app.finch.reauthenticate_session(secrets, &body).await?.value)
}

/// A Finch session Perch is about to hand out.
pub(crate) struct Pending<'a> {
    pub customer: &'a CustomerId,
    pub finch_customer_id: FinchCustomerId,
    pub session: ConnectSession,
    pub mode: FlowMode,
    /// Set when the session re-authenticates an existing connection.
    pub reauth_of: Option<ConnectionId>,
}

/// Stores the pending flow of a new Finch session and hands out its state: in the
/// `connect_url` for the redirect flow, beside it for the embedded flow.
pub(crate) async fn start_flow<A: Adapters>(
    app: &AppState<A>,
    store: &dyn IssueState,
    connections: &dyn ReadConnection,
    secrets: &FinchSecrets,
    p: Pending<'_>,
    minutes_to_expire: Option<u32>,
) -> Result<NewSession, Error> {
    let (state_value, state) = state::issue(secrets.state_key.expose_secret())?;
    // As long as the Finch session: a Connect link emailed to the employer works to its end.
    let minutes = minutes_to_expire.unwrap_or(DEFAULT_MINUTES_TO_EXPIRE);
    let session_id = p.session.session_id.clone();
    let flow = crate::store::PendingFlow {
        customer: p.customer.clone(),
        finch_customer_id: p.finch_customer_id.clone(),
        session_id: session_id.clone(),
        mode: p.mode,
        reauth_of: p.reauth_of.clone(),
        expires_at: app.clock.now() + time::Duration::minutes(i64::from(minutes)),
    };
    store.put_state(state.id(), &flow).await?;
    if let Some(id) = &p.reauth_of {
        refuse_if_disconnecting(connections, id).await?;
    }

    let (connect_url, state) = match p.mode {
        FlowMode::Redirect => {
            let mut url = url::Url::parse(&p.session.connect_url)
                .map_err(|e| Error::internal_from("Finch returned an unparseable connect_url", e))?;
            url.query_pairs_mut().append_pair("state", &state_value);
            (url.to_string(), None)
        }
        FlowMode::Embedded => (p.session.connect_url, Some(state_value)),
    };
    // Not the session id: its Connect link stays usable at Finch for up to 90 days.
    tracing::info!(finch_customer_id = %p.finch_customer_id, reauth = p.reauth_of.is_some(), "connect session created");
    Ok(NewSession {
        session_id,
        connect_url,
        flow: p.mode,
        state,
        finch_customer_id: p.finch_customer_id,
        reauthenticates: p.reauth_of,
    })
}

/// A reauthentication session is handed out only if no disconnect of its connection has
/// started. Checked *after* its state is stored, with a strongly consistent read: a disconnect
/// that started before this check is seen, and one that starts after it finds the state
/// already issued (whose callback it then refuses). The refused state is left to expire: its
/// URL never left Perch.
async fn refuse_if_disconnecting(connections: &dyn ReadConnection, id: &ConnectionId) -> Result<(), Error> {
    match connections.get_connection(id).await? {
        Some(rec) if rec.is_disconnecting_or_gone() => {
            tracing::info!(connection_id = %id, "reauthentication refused: the connection is being disconnected");
            Err(crate::store::disconnecting_conflict())
        }
        _ => Ok(()),
    }
}

/// Picks and claims the Finch `customer_id` for this session (see the module docs).
async fn claim_slot(
    store: &dyn SessionStore,
    customer: &CustomerId,
    additional: bool,
) -> Result<FinchCustomerId, Error> {
    let taken: HashSet<FinchCustomerId> = if additional {
        all_connections(store, customer).await?.into_iter().map(|c| c.finch_customer_id).collect()
    } else {
        HashSet::new()
    };
    for slot in 1..=MAX_SLOTS {
        let id = FinchCustomerId::for_slot(customer, slot);
        if taken.contains(&id) {
            continue;
        }
        if store.claim_finch_customer(&id, customer, slot).await? {
            return Ok(id);
        }
    }
    Err(Error::conflict("too_many_connections", format!("A customer can hold at most {MAX_SLOTS} connection slots.")))
}

/// Every connection of a customer (bounded by the slot limit in practice).
async fn all_connections(store: &dyn ListConnections, customer: &CustomerId) -> Result<Vec<ConnectionSummary>, Error> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_connections(customer, 100, cursor.as_deref()).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) if out.len() < 10_000 => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

/// One page of the caller's connections.
pub async fn list_connections<A: Adapters>(
    app: &AppState<A>,
    customer: &CustomerId,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<Page, Error> {
    let store: &dyn ListConnections = &*app.store;
    let limit = match limit {
        None => PAGE_DEFAULT,
        Some(l) => l.parse::<i32>().ok().filter(|l| (1..=PAGE_MAX).contains(l)).ok_or_else(|| {
            Error::invalid("invalid_limit", format!("`limit` must be an integer from 1 to {PAGE_MAX}."))
        })?,
    };
    store.list_connections(customer, limit, cursor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<NewSessionRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn refused(json: &str) -> &'static str {
        match req(json).unwrap().validate() {
            Err(Error::Invalid { code, .. }) => code,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn session_requests_are_validated_before_finch() {
        assert!(req(r#"{"products":["company"]}"#).unwrap().validate().is_ok());
        assert_eq!(refused(r#"{"products":[]}"#), "invalid_products");
        assert!(req(r#"{"products":["payroll"]}"#).is_err());
        assert!(req(r#"{"products":["company"],"customer_id":"evil"}"#).is_err(), "customer never comes from the body");
        assert_eq!(refused(r#"{"products":["company","company"]}"#), "invalid_products");
        assert_eq!(refused(r#"{"products":["benefits","deduction"]}"#), "invalid_products");
        assert_eq!(refused(r#"{"products":["company"],"minutes_to_expire":0}"#), "invalid_minutes_to_expire");
        assert_eq!(refused(r#"{"products":["company"],"minutes_to_expire":129601}"#), "invalid_minutes_to_expire");
        assert!(req(r#"{"products":["company"],"sandbox":"true"}"#).is_err());
        assert!(req(r#"{"products":["company"],"integration":{"provider":"gusto","auth_method":"sso"}}"#).is_err());
        assert_eq!(refused(r#"{"products":["company"],"integration":{"provider":"Gusto!"}}"#), "invalid_integration");
        assert_eq!(refused(r#"{"products":["company"],"customer_email":"not-an-email"}"#), "invalid_customer_email");
        assert_eq!(refused(r#"{"products":["company"],"customer_name":"  "}"#), "invalid_customer_name");
        for bad in ["Acme\\u0000", "Acme\\r\\nInc", "\\u202eAcme", "Ac\\u2066me", "Acme\\u200f"] {
            let json = format!(r#"{{"products":["company"],"customer_name":"{bad}"}}"#);
            assert_eq!(refused(&json), "invalid_customer_name", "{bad}");
        }
        assert!(req(r#"{"products":["company"],"customer_name":"Café Zürich — 東京"}"#).unwrap().validate().is_ok());
        assert!(req(r#"{"products":["company"],"flow":"popup"}"#).is_err());
    }
}
