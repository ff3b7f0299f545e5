//! The emulator's in-memory Finch: sessions, codes, connections, tokens, faults, a clock.
//!
//! All of it sits behind one mutex that is never held across an `await`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::people::{Population, Roster, seed_of};

/// How long an authorization code lives (Finch: 10 minutes).
pub const CODE_LIFETIME_SECS: i64 = 600;
/// Default Connect session lifetime (Finch: 90 days).
pub const DEFAULT_SESSION_MINUTES: i64 = 129_600;

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: String,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub products: Vec<String>,
    pub redirect_uri: Option<String>,
    pub sandbox: Option<String>,
    pub manual: bool,
    pub provider: Option<String>,
    pub auth_method: Option<String>,
    /// Set for reauthentication sessions.
    pub reauth_connection: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub completed: bool,
}

#[derive(Debug, Clone)]
pub struct Code {
    pub connection_id: String,
    /// The session the code completed (kept for inspection).
    pub session_id: String,
    pub redirect_uri: Option<String>,
    pub issued_at: OffsetDateTime,
    pub used: bool,
}

/// An employer as the emulator's providers know it: found again by whoever logs in to it.
#[derive(Debug, Clone, Serialize)]
pub struct Company {
    pub id: String,
    pub name: String,
    /// Its entities (divisions, EINs): the first is the company itself.
    pub entities: Vec<CompanyEntity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompanyEntity {
    pub id: String,
    pub name: String,
    pub source_id: String,
}

/// One entity of a connection, with its own status.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionEntity {
    pub id: String,
    pub name: String,
    pub source_id: String,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub id: String,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub provider_id: String,
    pub products: Vec<String>,
    pub company_id: String,
    pub company_name: String,
    /// The entities the employer picked (one unless they logged in for several).
    pub entities: Vec<ConnectionEntity>,
    pub status: String,
    pub auth_type: String,
    pub client_type: String,
    pub connection_type: String,
    pub manual: bool,
    pub disconnected: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub id: String,
    pub connection_id: String,
    pub revoked: bool,
}

/// A fault to inject on matching requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Path prefix the fault applies to (`/auth/token`); all Finch routes when absent.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// Status to answer with instead of the real handler (latency alone when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// Delay before answering (or before the real handler runs).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// `Retry-After` seconds to send with the injected status.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// How many requests it applies to; forever when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// `Location` to send with the injected status (a redirect a client must not follow).
    #[serde(default)]
    pub location: Option<String>,
    /// Hold the request at this named gate until the test releases it (see `holds`).
    #[serde(default)]
    pub hold: Option<String>,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// 0 while in flight, and for good when the client gave up (timed out) first.
    pub status: u16,
    pub request_id: String,
    pub injected: bool,
}

/// Finch's documented limits (`docs/finch-contract.md`), with windows that tests may shrink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimits {
    /// Requests per IP per window (Finch: 1,000 per 5 minutes).
    #[serde(default = "default_ip_limit")]
    pub ip_limit: u32,
    #[serde(default = "default_ip_window_ms")]
    pub ip_window_ms: u64,
    /// Penalty once the IP limit is exceeded (Finch: 60 minutes).
    #[serde(default = "default_penalty_ms")]
    pub penalty_ms: u64,
    /// Requests per data endpoint per window, across every token of the application (Finch: 20
    /// a minute for company, directory, individual, employment).
    #[serde(default = "default_product_limit")]
    pub product_limit: u32,
    /// The same for payment and pay-statement (Finch: 12 a minute).
    #[serde(default = "default_slow_product_limit")]
    pub slow_product_limit: u32,
    #[serde(default = "default_product_window_ms")]
    pub product_window_ms: u64,
}

fn default_ip_limit() -> u32 {
    1000
}
fn default_ip_window_ms() -> u64 {
    300_000
}
fn default_penalty_ms() -> u64 {
    3_600_000
}
fn default_product_limit() -> u32 {
    20
}
fn default_slow_product_limit() -> u32 {
    12
}
fn default_product_window_ms() -> u64 {
    60_000
}

/// The rolling windows behind [`RateLimits`].
#[derive(Debug, Default)]
pub struct RateState {
    pub ip: std::collections::VecDeque<std::time::Instant>,
    pub penalty_until: Option<std::time::Instant>,
    pub product: HashMap<(String, String), std::collections::VecDeque<std::time::Instant>>,
    pub rejected: u64,
}

fn within(
    q: &mut std::collections::VecDeque<std::time::Instant>,
    now: std::time::Instant,
    window: std::time::Duration,
    limit: u32,
) -> bool {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
    q.push_back(now);
    q.len() <= limit as usize
}

impl RateState {
    /// Counts a request; `Some(finch_code)` when Finch would refuse it.
    pub fn admit(&mut self, limits: &RateLimits, product_key: Option<(String, String)>) -> Option<&'static str> {
        let now = std::time::Instant::now();
        if self.penalty_until.is_some_and(|p| now < p) {
            self.rejected += 1;
            return Some("finch_api_ip_rl");
        }
        if !within(&mut self.ip, now, std::time::Duration::from_millis(limits.ip_window_ms), limits.ip_limit) {
            self.penalty_until = Some(now + std::time::Duration::from_millis(limits.penalty_ms));
            self.rejected += 1;
            return Some("finch_api_ip_rl");
        }
        if let Some(key) = product_key {
            let limit = if ["payment", "pay-statement"].contains(&key.1.as_str()) {
                limits.slow_product_limit
            } else {
                limits.product_limit
            };
            let q = self.product.entry(key).or_default();
            if !within(q, now, std::time::Duration::from_millis(limits.product_window_ms), limit) {
                self.rejected += 1;
                return Some("finch_application_rl");
            }
        }
        None
    }
}

impl Connection {
    /// The first entity's id: Finch's deprecated `account_id`.
    pub fn account_id(&self) -> String {
        self.entities.first().map(|e| e.id.clone()).unwrap_or_default()
    }

    /// Whether the employer connected several entities (webhooks then name the entity).
    pub fn is_multi_entity(&self) -> bool {
        self.entities.len() > 1
    }

    /// The entities not disconnected.
    pub fn live_entity_ids(&self) -> Vec<String> {
        self.entities.iter().filter(|e| e.status != "disconnected").map(|e| e.id.clone()).collect()
    }
}

/// How many entities every emulated company has: the company itself and two divisions.
pub const ENTITIES_PER_COMPANY: usize = 3;

#[derive(Default)]
pub struct World {
    pub clock_offset_secs: i64,
    pub sessions: HashMap<String, Session>,
    pub codes: HashMap<String, Code>,
    pub connections: HashMap<String, Connection>,
    /// Employers, by who logs in: the customer name the session carries and the username.
    pub companies: HashMap<String, Company>,
    pub tokens: HashMap<String, Token>,
    pub faults: Vec<Fault>,
    pub requests: Vec<Seen>,
    pub violations: Vec<String>,
    /// Where `account.updated` events go when a connection's status changes.
    pub webhook: Option<crate::webhooks::Target>,
    /// Finch's rate limits, when enforced (off unless configured).
    pub rate_limits: Option<RateLimits>,
    pub rate_state: RateState,
    /// Answer `/auth/token` as seed 003's example does: without `connection_id`.
    pub token_without_connection_id: bool,
    /// Each entity's people, by entity id (see [`crate::people`]).
    pub rosters: HashMap<String, Roster>,
    /// How many people a new company's first entity has (its divisions a tenth, at least 2);
    /// Finch's sandbox default is 20.
    pub default_employees: Option<u32>,
    /// When each entity's data last changed (Finch's last sync that found a change); a
    /// connection's data is as of the later of this and its creation.
    pub synced_at: HashMap<String, OffsetDateTime>,
    /// Connections whose data is not there yet: the 202 `finch_code` they answer with, until when
    /// (for good when `None`, until the control API ends it).
    pub data_phases: HashMap<String, (String, Option<OffsetDateTime>)>,
    /// The 202 phase every connection made from now on starts in (Finch's first sync takes
    /// hours, an assisted one days): its `finch_code`, and for how many seconds (for good when
    /// `None`, until the control API ends it).
    pub new_connection_phase: Option<(String, Option<i64>)>,
    /// Each entity's payroll as last built, and the day it was built for (dropped when its
    /// people change: see [`World::touch`]).
    pub payrolls: HashMap<String, (time::Date, std::sync::Arc<crate::payroll::Payroll>)>,
    /// Payments made through the sandbox, per entity.
    pub sandbox_payments: HashMap<String, Vec<crate::payroll::SandboxPayment>>,
    /// Payments whose statements Finch is still fetching, per entity.
    pub pay_pending: HashMap<String, crate::payroll::Pending>,
    /// The next successful answer on this path breaks off after this many bytes, as a
    /// connection lost mid-answer does (a test's fault; taken by the answer it cuts).
    pub cut: Option<(String, usize)>,
}

/// Finch's sandbox default company size.
pub const DEFAULT_EMPLOYEES: u32 = 20;

impl World {
    /// The roster of `entity`, made with the default size if it has none yet.
    pub fn roster(&mut self, entity: &str) -> &mut Roster {
        let size = self.default_employees.unwrap_or(DEFAULT_EMPLOYEES);
        self.rosters.entry(entity.to_owned()).or_insert_with(|| Roster::new(seed_of(entity), size))
    }

    /// Records that `entity`'s data changed now (what Finch's next sync would pick up).
    pub fn touch(&mut self, entity: &str) {
        self.payrolls.remove(entity);
        let now = self.now().replace_nanosecond(0).unwrap_or_else(|_| self.now());
        self.synced_at.insert(entity.to_owned(), now);
    }

    /// `entity`'s payroll as of today (built on first read after a change).
    pub fn payroll(&mut self, entity: &str) -> std::sync::Arc<crate::payroll::Payroll> {
        let today = self.now().date();
        if let Some((day, p)) = self.payrolls.get(entity)
            && *day == today
        {
            return p.clone();
        }
        let sandbox = self.sandbox_payments.get(entity).cloned().unwrap_or_default();
        let built = std::sync::Arc::new(crate::payroll::Payroll::build(self.roster(entity), &sandbox, today));
        self.payrolls.insert(entity.to_owned(), (today, built.clone()));
        built
    }

    /// When the data Finch serves for `entity` of `c` was retrieved (`Finch-Data-Retrieved`).
    pub fn data_retrieved(&self, c: &Connection, entity: &str) -> OffsetDateTime {
        let created = c.created_at.replace_nanosecond(0).unwrap_or(c.created_at);
        self.synced_at.get(entity).copied().map_or(created, |t| t.max(created))
    }

    /// A connection's last successful sync: the latest of its entities'.
    pub fn last_sync(&self, c: &Connection) -> OffsetDateTime {
        c.entities.iter().map(|e| self.data_retrieved(c, &e.id)).max().unwrap_or(c.created_at)
    }

    /// The 202 reason a connection's data requests get now, if any.
    pub fn data_phase(&self, connection_id: &str) -> Option<String> {
        let (code, until) = self.data_phases.get(connection_id)?;
        until.is_none_or(|t| self.now() < t).then(|| code.clone())
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::seconds(self.clock_offset_secs)
    }

    /// The live (not disconnected) connection filed under a Finch `customer_id`.
    pub fn live_connection_of(&self, customer_id: &str) -> Option<&Connection> {
        self.connections.values().find(|c| !c.disconnected && c.customer_id.as_deref() == Some(customer_id))
    }

    /// An unexpired, uncompleted first-connect session for the customer (Finch refreshes it).
    pub fn staged_session_of(&self, customer_id: &str) -> Option<String> {
        let now = self.now();
        self.sessions
            .values()
            .find(|s| {
                s.customer_id.as_deref() == Some(customer_id)
                    && s.reauth_connection.is_none()
                    && !s.completed
                    && s.expires_at > now
            })
            .map(|s| s.id.clone())
    }

    /// Takes the first fault matching a request, consuming one use of it.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let idx = self.faults.iter().position(|f| {
            f.path.as_deref().is_none_or(|p| path.starts_with(p))
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.times != Some(0)
        })?;
        let f = self.faults[idx].clone();
        if let Some(t) = self.faults[idx].times.as_mut() {
            *t -= 1;
            if *t == 0 {
                self.faults.remove(idx);
            }
        }
        Some(f)
    }

    /// Mints a token for a connection.
    pub fn mint_token(&mut self, connection_id: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        self.tokens.insert(
            token.clone(),
            Token { id: uuid::Uuid::new_v4().to_string(), connection_id: connection_id.to_owned(), revoked: false },
        );
        token
    }

    /// The company an employer reaches by logging in as `username` for `customer_name`: the
    /// same login finds the same company (and its ids) again, as a provider account would.
    pub fn company_for(&mut self, customer_name: Option<&str>, username: &str) -> Company {
        let key = format!("{}|{username}", customer_name.unwrap_or(""));
        let company = self
            .companies
            .entry(key)
            .or_insert_with(|| {
                let name = match customer_name {
                    None => "Finch Sandbox Co".to_owned(),
                    Some(n) if n.contains("Inc") || n.contains("LLC") => n.to_owned(),
                    Some(n) => format!("{n}, Inc."),
                };
                let base = name.trim_end_matches(", Inc.").to_owned();
                let entities = [name.clone(), format!("{base} East"), format!("{base} West")]
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| CompanyEntity {
                        id: uuid::Uuid::new_v4().to_string(),
                        name: n,
                        source_id: format!("EIN-{}", 10 + i),
                    })
                    .collect();
                Company { id: uuid::Uuid::new_v4().to_string(), name, entities }
            })
            .clone();
        // One workforce per employer, whatever login or provider reaches it: every company of
        // the same customer name draws its entities' rosters from the same people (a second
        // provider of the employer shows the same employees), and a division shares a few
        // people with the company itself (someone employed by two entities).
        let size = self.default_employees.unwrap_or(DEFAULT_EMPLOYEES);
        let population = seed_of(&format!("population|{}", customer_name.unwrap_or("")));
        let division = (size / 10).max(2);
        for (i, e) in company.entities.iter().enumerate() {
            let (n, offset) = match i {
                0 => (size, 0),
                // The first division's first tenth are people of the company itself.
                1 => (division, size - (division / 10).max(1).min(size)),
                _ => (division, size + division * (i as u32 - 1)),
            };
            self.rosters
                .entry(e.id.clone())
                .or_insert_with(|| Roster::drawn(seed_of(&e.id), n, Population { seed: population, offset }));
        }
        company
    }

    /// Creates a connection to the company `good_user` reaches, for its first entity.
    #[allow(clippy::too_many_arguments)]
    pub fn create_connection(
        &mut self,
        customer_id: Option<String>,
        customer_name: Option<String>,
        customer_email: Option<String>,
        provider_id: String,
        products: Vec<String>,
        auth_type: String,
        sandbox: Option<&str>,
        manual: bool,
    ) -> String {
        let company = self.company_for(customer_name.as_deref(), "good_user");
        let first = vec![company.entities[0].id.clone()];
        let new =
            NewConnection { customer_id, customer_name, customer_email, provider_id, products, auth_type, manual };
        self.connect(new, &company, &first, sandbox)
    }

    /// Creates a connection to `company` for the entities picked (ids of its own; unknown
    /// ones are ignored, none at all means its first).
    pub fn connect(
        &mut self,
        new: NewConnection,
        company: &Company,
        picked: &[String],
        sandbox: Option<&str>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let status = if new.auth_type == "assisted" { "pending" } else { "connected" };
        let mut entities: Vec<ConnectionEntity> = company
            .entities
            .iter()
            .filter(|e| picked.contains(&e.id))
            .map(|e| ConnectionEntity {
                id: e.id.clone(),
                name: e.name.clone(),
                source_id: e.source_id.clone(),
                status: status.into(),
            })
            .collect();
        if entities.is_empty() {
            let e = &company.entities[0];
            entities.push(ConnectionEntity {
                id: e.id.clone(),
                name: e.name.clone(),
                source_id: e.source_id.clone(),
                status: status.into(),
            });
        }
        let conn = Connection {
            id: id.clone(),
            customer_id: new.customer_id,
            customer_name: new.customer_name,
            customer_email: new.customer_email,
            provider_id: new.provider_id,
            products: new.products,
            company_id: company.id.clone(),
            company_name: company.name.clone(),
            entities,
            status: status.into(),
            auth_type: new.auth_type,
            client_type: if sandbox.is_some() { "sandbox".into() } else { "production".into() },
            connection_type: if sandbox == Some("finch") { "finch".into() } else { "provider".into() },
            manual: new.manual,
            disconnected: false,
            created_at: self.now(),
        };
        self.connections.insert(id.clone(), conn);
        if let Some((code, secs)) = self.new_connection_phase.clone() {
            let until = secs.map(|s| self.now() + time::Duration::seconds(s));
            self.data_phases.insert(id.clone(), (code, until));
        }
        id
    }
}

/// What a new connection is, besides its company and entities.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub provider_id: String,
    pub products: Vec<String>,
    pub auth_type: String,
    pub manual: bool,
}
