//! Every store trait on maps behind one mutex, with DynamoDB's conditions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use crate::crypto::EncryptedToken;
use crate::domain::{
    CodeHash, ConnectionId, ConnectionState, ConnectionStatus, CustomerId, EntityId, Error, EventId, FinchCustomerId,
    FlowMode, StateId,
};
use crate::store::{
    ApplyPushedEntityStatus, ApplyPushedStatus, CheckConnections, ClaimFinchCustomer, CodeExchanges, ConnectionRecord,
    ConsumeState, DisconnectSteps, EventIds, ExchangeStart, FinchCustomerOwner, IssueState, ListConnections,
    Observation, Page, ParkStatus, ParkedStatus, PendingFlow, Pushed, ReadConnection, ReplaceTokens, RequestRefresh,
    SaveConnection, SaveOutcome, ScanPage, TakeParkedStatus, pushed_instant,
};

/// A code exchange's marker: who started it, and the connection once done.
#[derive(Debug, Clone)]
struct Marker {
    customer: CustomerId,
    done: Option<ConnectionId>,
}

#[derive(Default)]
pub(super) struct Tables {
    pub(super) connections: BTreeMap<ConnectionId, ConnectionRecord>,
    claims: HashMap<FinchCustomerId, CustomerId>,
    states: HashMap<StateId, PendingFlow>,
    codes: HashMap<CodeHash, Marker>,
    events: HashMap<EventId, OffsetDateTime>,
    parked: HashMap<ConnectionId, ParkedStatus>,
    /// Employer claims: which connection stands for an employer key.
    employers: HashMap<String, ConnectionId>,
    /// Finch's rate windows, by name.
    windows: HashMap<String, crate::store::WindowLog>,
    /// Operations told to fail, and how many more times.
    faults: HashMap<&'static str, u32>,
    /// The records table.
    pub(super) data: super::data::DataTables,
    /// The person index (in the records table when deployed).
    pub(super) people: super::people::PeopleTables,
}

/// The in-memory store (see [`super`]).
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the next `times` calls of `operation` (a trait method's name, e.g.
    /// `"save_connection"`) fail as a throttled AWS call would: a retryable `Error::Aws`.
    pub fn fail_next(&self, operation: &'static str, times: u32) {
        self.tables().faults.insert(operation, times);
    }

    /// Every stored connection, tombstones included.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.tables().connections.values().cloned().collect()
    }

    /// Whether a code's exchange marker exists.
    pub fn has_code_marker(&self, code: &CodeHash) -> bool {
        self.tables().codes.contains_key(code)
    }

    /// Which connection holds an employer claim.
    pub fn employer_claim(&self, key: &str) -> Option<ConnectionId> {
        self.tables().employers.get(key).cloned()
    }

    /// Whether a state is still pending.
    pub fn has_state(&self, state: &StateId) -> bool {
        self.tables().states.contains_key(state)
    }

    /// Replaces a stored connection as is (tests arranging a situation).
    pub fn put_connection(&self, record: ConnectionRecord) {
        self.tables().connections.insert(record.connection_id.clone(), record);
    }

    /// The tables, unless `operation` was told to fail now.
    pub(super) fn enter(&self, operation: &'static str) -> Result<std::sync::MutexGuard<'_, Tables>, Error> {
        let mut t = self.tables();
        if let Some(left) = t.faults.get_mut(operation)
            && *left > 0
        {
            *left -= 1;
            return Err(Error::Aws {
                service: "dynamodb",
                operation,
                retryable: true,
                source: "ProvisionedThroughputExceededException (injected)".into(),
            });
        }
        Ok(t)
    }
}

fn changed() -> Error {
    Error::conflict("connection_changed", "The connection changed while it was being saved; try again.")
}

fn live(r: &ConnectionRecord) -> bool {
    r.status != ConnectionState::Disconnecting && r.disconnected_at.is_none()
}

#[async_trait]
impl ReadConnection for MemoryStore {
    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, Error> {
        Ok(self.enter("get_connection")?.connections.get(id).cloned())
    }
}

/// Cursors name a position as the DynamoDB adapter's do: after (created_at, id).
fn cursor_of(r: &ConnectionRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{}", r.created_at.unix_timestamp_nanos(), r.connection_id))
}

fn parse_cursor(cursor: &str) -> Result<(i128, String), Error> {
    let bad = || Error::invalid("invalid_cursor", "The cursor is not one Perch issued.");
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = text.split_once('\n').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

#[async_trait]
impl ListConnections for MemoryStore {
    async fn list_connections(&self, customer: &CustomerId, limit: i32, cursor: Option<&str>) -> Result<Page, Error> {
        let after = cursor.map(parse_cursor).transpose()?;
        let t = self.enter("list_connections")?;
        let mut mine: Vec<&ConnectionRecord> =
            t.connections.values().filter(|r| r.customer == *customer && r.disconnected_at.is_none()).collect();
        mine.sort_by_key(|r| (r.created_at.unix_timestamp_nanos(), r.connection_id.as_str().to_owned()));
        let rest: Vec<&ConnectionRecord> = mine
            .into_iter()
            .filter(|r| {
                after.as_ref().is_none_or(|(at, id)| {
                    (r.created_at.unix_timestamp_nanos(), r.connection_id.as_str()) > (*at, id.as_str())
                })
            })
            .collect();
        let limit = usize::try_from(limit).unwrap_or(0);
        let page: Vec<&ConnectionRecord> = rest.iter().take(limit).copied().collect();
        let next_cursor = (rest.len() > limit).then(|| page.last().map(|r| cursor_of(r))).flatten();
        Ok(Page { items: page.into_iter().map(ConnectionRecord::summary).collect(), next_cursor })
    }
}

#[async_trait]
impl SaveConnection for MemoryStore {
    async fn save_connection(
        &self,
        record: &ConnectionRecord,
        expected_version: Option<u64>,
        code: Option<&CodeHash>,
        take_claim_from: Option<&ConnectionId>,
    ) -> Result<SaveOutcome, Error> {
        let mut t = self.enter("save_connection")?;
        let ok = match (t.connections.get(&record.connection_id), expected_version) {
            (None, None) => true,
            (Some(old), Some(v)) => old.version == v && old.customer == record.customer,
            _ => false,
        };
        let code_ok = code.is_none_or(|c| t.codes.get(c).is_some_and(|m| m.done.is_none()));
        let claim = record.employer_key.clone().filter(|_| expected_version.is_none());
        let holder = claim.as_ref().and_then(|k| t.employers.get(k)).filter(|h| Some(*h) != take_claim_from);
        if ok
            && code_ok
            && let Some(h) = holder
        {
            return Ok(SaveOutcome::ClaimedBy(h.clone()));
        }
        if !ok || !code_ok {
            return Err(changed());
        }
        if let Some(k) = claim {
            t.employers.insert(k, record.connection_id.clone());
        }
        if let Some(c) = code
            && let Some(m) = t.codes.get_mut(c)
        {
            m.done = Some(record.connection_id.clone());
            m.customer = record.customer.clone();
        }
        t.connections.insert(record.connection_id.clone(), record.clone());
        Ok(if expected_version.is_none() { SaveOutcome::Created } else { SaveOutcome::Replaced })
    }
}

#[async_trait]
impl DisconnectSteps for MemoryStore {
    async fn mark_disconnecting(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        lease_until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let mut t = self.enter("mark_disconnecting")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| r.version == expected_version) else { return Ok(false) };
        r.status = ConnectionState::Disconnecting;
        r.disconnect_lease = Some(lease_until);
        r.updated_at = OffsetDateTime::now_utc();
        r.version += 1;
        Ok(true)
    }

    async fn release_disconnect(&self, id: &ConnectionId) -> Result<(), Error> {
        let mut t = self.enter("release_disconnect")?;
        if let Some(r) = t.connections.get_mut(id).filter(|r| r.status == ConnectionState::Disconnecting) {
            r.disconnect_lease = None;
            r.version += 1;
        }
        Ok(())
    }

    async fn tombstone(&self, id: &ConnectionId, request_id: Option<&str>, _note: Option<&str>) -> Result<bool, Error> {
        let mut t = self.enter("tombstone")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| r.status == ConnectionState::Disconnecting) else {
            return Ok(false);
        };
        let now = OffsetDateTime::now_utc();
        r.status = ConnectionStatus::Disconnected.into();
        r.disconnected_at = Some(now);
        r.disconnect_lease = None;
        r.updated_at = now;
        r.version += 1;
        if let Some(rid) = request_id {
            r.last_finch_request_id = Some(rid.to_owned());
        }
        r.token = None;
        if let Some(key) = r.employer_key.clone()
            && t.employers.get(&key) == Some(id)
        {
            t.employers.remove(&key);
        }
        Ok(true)
    }

    async fn disconnect_entity(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        request_id: Option<&str>,
    ) -> Result<Option<ConnectionRecord>, Error> {
        let mut t = self.enter("disconnect_entity")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| live(r)) else { return Ok(None) };
        let Some(e) = r.entities.iter_mut().find(|e| e.id == *entity && e.disconnected_at.is_none()) else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        e.status = ConnectionStatus::Disconnected;
        e.disconnected_at = Some(now);
        e.observed_at = Some(now);
        r.updated_at = now;
        r.version += 1;
        if let Some(rid) = request_id {
            r.last_finch_request_id = Some(rid.to_owned());
        }
        let old = r.employer_key.clone();
        let new = r.current_employer_key();
        r.employer_key = new.clone();
        let after = r.clone();
        if let Some(k) = old
            && t.employers.get(&k) == Some(id)
        {
            t.employers.remove(&k);
        }
        if let Some(k) = new {
            t.employers.entry(k).or_insert_with(|| id.clone());
        }
        Ok(Some(after))
    }
}

#[async_trait]
impl ApplyPushedStatus for MemoryStore {
    async fn apply_pushed_status(
        &self,
        id: &ConnectionId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
        _event: &EventId,
    ) -> Result<Pushed, Error> {
        let mut t = self.enter("apply_pushed_status")?;
        let instant = pushed_instant(observed_at);
        let Some(r) = t.connections.get_mut(id) else { return Ok(Pushed::Unknown) };
        // As in the DynamoDB adapter: the event stands for the end of its second.
        if !live(r) || r.status_observed_at.is_some_and(|at| at > instant) {
            return Ok(Pushed::Stale);
        }
        let old = r.clone();
        r.status = status.clone().into();
        r.status_observed_at = Some(instant);
        r.updated_at = OffsetDateTime::now_utc();
        r.status_message = None;
        r.version += 1;
        Ok(Pushed::Applied(Box::new(old)))
    }
}

#[async_trait]
impl ApplyPushedEntityStatus for MemoryStore {
    async fn apply_pushed_entity_status(
        &self,
        id: &ConnectionId,
        entity: &EntityId,
        status: &ConnectionStatus,
        observed_at: OffsetDateTime,
    ) -> Result<Pushed, Error> {
        let mut t = self.enter("apply_pushed_entity_status")?;
        let instant = pushed_instant(observed_at);
        let Some(r) = t.connections.get_mut(id) else { return Ok(Pushed::Unknown) };
        if !r.entities.iter().any(|e| e.id == *entity) {
            return Ok(if live(r) { Pushed::NoSuchEntity } else { Pushed::Stale });
        }
        if !live(r) {
            return Ok(Pushed::Stale);
        }
        let old = r.clone();
        let Some(e) = r.entities.iter_mut().find(|e| e.id == *entity) else { return Ok(Pushed::NoSuchEntity) };
        if e.observed_at.is_some_and(|at| at > instant) {
            return Ok(Pushed::Stale);
        }
        e.status = status.clone();
        e.observed_at = Some(instant);
        r.updated_at = OffsetDateTime::now_utc();
        r.version += 1;
        Ok(Pushed::Applied(Box::new(old)))
    }
}

#[async_trait]
impl RequestRefresh for MemoryStore {
    async fn request_refresh(&self, id: &ConnectionId, at: OffsetDateTime) -> Result<bool, Error> {
        let mut t = self.enter("request_refresh")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| live(r)) else { return Ok(false) };
        r.refresh_requested_at = Some(at);
        r.version += 1;
        Ok(true)
    }
}

#[async_trait]
impl ParkStatus for MemoryStore {
    async fn park_status(&self, id: &ConnectionId, parked: &ParkedStatus) -> Result<(), Error> {
        let mut t = self.enter("park_status")?;
        if t.parked.get(id).is_none_or(|p| p.observed_at <= parked.observed_at) {
            t.parked.insert(id.clone(), parked.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl TakeParkedStatus for MemoryStore {
    async fn take_parked_status(&self, id: &ConnectionId) -> Result<Option<ParkedStatus>, Error> {
        Ok(self.enter("take_parked_status")?.parked.remove(id))
    }
}

/// A connection's scan segment: a stable hash of its id, as DynamoDB spreads items.
fn segment_of(id: &ConnectionId, total: i32) -> i32 {
    let h = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    i32::try_from(h % u64::try_from(total.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// A scan over connections in id order: `limit` items read after `start`, then filtered (the
/// limit counts items read, as DynamoDB's does).
fn scan(
    t: &Tables,
    start: Option<&str>,
    limit: i32,
    in_scope: impl Fn(&ConnectionRecord) -> bool,
    keep: impl Fn(&ConnectionRecord) -> bool,
) -> ScanPage {
    let limit = usize::try_from(limit).unwrap_or(0);
    let read: Vec<&ConnectionRecord> = t
        .connections
        .values()
        .filter(|r| in_scope(r))
        .filter(|r| start.is_none_or(|s| r.connection_id.as_str() > s))
        .take(limit + 1)
        .collect();
    let more = read.len() > limit;
    let read = &read[..read.len().min(limit)];
    ScanPage {
        items: read.iter().filter(|r| keep(r)).map(|r| (*r).clone()).collect(),
        next: if more { read.last().map(|r| r.connection_id.to_string()) } else { None },
        scanned: i32::try_from(read.len()).unwrap_or(i32::MAX),
    }
}

#[async_trait]
impl CheckConnections for MemoryStore {
    async fn scan_due(
        &self,
        segment: i32,
        total_segments: i32,
        start: Option<&str>,
        limit: i32,
        cutoff: OffsetDateTime,
    ) -> Result<ScanPage, Error> {
        let t = self.enter("scan_due")?;
        Ok(scan(
            &t,
            start,
            limit,
            |r| segment_of(&r.connection_id, total_segments) == segment,
            |r| {
                live(r)
                    && r.status != ConnectionStatus::Disconnected
                    && ((r.checked_at.is_none_or(|c| c < cutoff) && r.status_observed_at.is_none_or(|o| o < cutoff))
                        || r.refresh_requested_at.is_some_and(|at| r.checked_at.is_none_or(|c| c < at)))
            },
        ))
    }

    async fn record_check(&self, id: &ConnectionId, expected_version: u64, obs: &Observation) -> Result<bool, Error> {
        let mut t = self.enter("record_check")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| r.version == expected_version && live(r)) else {
            return Ok(false);
        };
        let now = OffsetDateTime::now_utc();
        r.status = obs.status.clone().into();
        r.status_observed_at = Some(obs.observed_at);
        r.checked_at = Some(now);
        r.updated_at = now;
        r.version += 1;
        r.status_message = obs.status_message.clone();
        r.last_successful_sync = obs.last_successful_sync.clone();
        if let Some(rid) = &obs.request_id {
            r.last_finch_request_id = Some(rid.clone());
        }
        if let Some(p) = &obs.products {
            r.products = p.clone();
        }
        if let Some(e) = &obs.entities {
            r.entities = e.clone();
        }
        if let Some(e) = &obs.employer {
            let merge = |stored: &mut Option<String>, seen: &Option<String>| {
                if seen.is_some() {
                    stored.clone_from(seen);
                }
            };
            merge(&mut r.employer.company_id, &e.company_id);
            merge(&mut r.employer.legal_name, &e.legal_name);
            merge(&mut r.employer.customer_name, &e.customer_name);
            merge(&mut r.employer.customer_email, &e.customer_email);
            merge(&mut r.employer.connection_type, &e.connection_type);
            merge(&mut r.employer.authentication_method, &e.authentication_method);
        }
        r.refresh_requested_at = None;
        Ok(true)
    }
}

#[async_trait]
impl ReplaceTokens for MemoryStore {
    async fn scan_tokens_not_under(&self, key_arn: &str, start: Option<&str>, limit: i32) -> Result<ScanPage, Error> {
        let t = self.enter("scan_tokens_not_under")?;
        Ok(scan(&t, start, limit, |_| true, |r| r.token.as_ref().is_some_and(|k| k.key_id != key_arn)))
    }

    async fn replace_token(
        &self,
        id: &ConnectionId,
        expected_version: u64,
        token: &EncryptedToken,
    ) -> Result<bool, Error> {
        let mut t = self.enter("replace_token")?;
        let Some(r) = t.connections.get_mut(id).filter(|r| r.version == expected_version && r.token.is_some()) else {
            return Ok(false);
        };
        r.token = Some(token.clone());
        r.version += 1;
        Ok(true)
    }
}

#[async_trait]
impl ClaimFinchCustomer for MemoryStore {
    async fn claim_finch_customer(
        &self,
        id: &FinchCustomerId,
        customer: &CustomerId,
        _slot: u32,
    ) -> Result<bool, Error> {
        let mut t = self.enter("claim_finch_customer")?;
        Ok(t.claims.entry(id.clone()).or_insert_with(|| customer.clone()) == customer)
    }
}

#[async_trait]
impl FinchCustomerOwner for MemoryStore {
    async fn finch_customer_owner(&self, id: &FinchCustomerId) -> Result<Option<CustomerId>, Error> {
        Ok(self.enter("finch_customer_owner")?.claims.get(id).cloned())
    }
}

#[async_trait]
impl IssueState for MemoryStore {
    async fn put_state(&self, state: &StateId, flow: &PendingFlow) -> Result<(), Error> {
        let mut t = self.enter("put_state")?;
        if t.states.contains_key(state) {
            return Err(Error::internal("state id collision"));
        }

        t.states.insert(state.clone(), flow.clone());
        Ok(())
    }
}

#[async_trait]
impl ConsumeState for MemoryStore {
    async fn take_state(
        &self,
        state: &StateId,
        now: OffsetDateTime,
        mode: FlowMode,
        owner: Option<&CustomerId>,
    ) -> Result<Option<PendingFlow>, Error> {
        let mut t = self.enter("take_state")?;
        let usable = t.states.get(state).is_some_and(|f| {
            f.expires_at.unix_timestamp() > now.unix_timestamp()
                && f.mode == mode
                && owner.is_none_or(|o| f.customer == *o)
        });
        Ok(if usable { t.states.remove(state) } else { None })
    }
}

#[async_trait]
impl CodeExchanges for MemoryStore {
    async fn begin_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        _now: OffsetDateTime,
    ) -> Result<ExchangeStart, Error> {
        let mut t = self.enter("begin_exchange")?;
        match t.codes.get(code) {
            None => {
                t.codes.insert(code.clone(), Marker { customer: customer.clone(), done: None });
                Ok(ExchangeStart::Started)
            }
            Some(Marker { customer, done: Some(connection_id) }) => {
                Ok(ExchangeStart::Done { customer: customer.clone(), connection_id: connection_id.clone() })
            }
            Some(_) => Ok(ExchangeStart::InProgress),
        }
    }

    async fn abandon_exchange(&self, code: &CodeHash) -> Result<(), Error> {
        let mut t = self.enter("abandon_exchange")?;
        if t.codes.get(code).is_some_and(|m| m.done.is_none()) {
            t.codes.remove(code);
        }
        Ok(())
    }

    async fn finish_exchange(
        &self,
        code: &CodeHash,
        customer: &CustomerId,
        connection: &ConnectionId,
    ) -> Result<(), Error> {
        let mut t = self.enter("finish_exchange")?;
        if let Some(m) = t.codes.get_mut(code).filter(|m| m.done.is_none()) {
            m.customer = customer.clone();
            m.done = Some(connection.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl EventIds for MemoryStore {
    async fn mark_event(&self, id: &EventId, ttl: time::Duration) -> Result<bool, Error> {
        let mut t = self.enter("mark_event")?;
        if t.events.contains_key(id) {
            return Ok(false);
        }
        t.events.insert(id.clone(), OffsetDateTime::now_utc() + ttl);
        Ok(true)
    }

    async fn unmark_event(&self, id: &EventId) -> Result<(), Error> {
        self.enter("unmark_event")?.events.remove(id);
        Ok(())
    }
}

#[async_trait]
impl crate::store::BudgetWindows for MemoryStore {
    async fn read_windows(&self, names: &[&str]) -> Result<Vec<crate::store::WindowLog>, Error> {
        let t = self.tables();
        Ok(names.iter().map(|n| t.windows.get(*n).cloned().unwrap_or_default()).collect())
    }

    async fn write_windows(&self, windows: &[(&str, &crate::store::WindowLog)]) -> Result<bool, Error> {
        let mut t = self.tables();
        let current = |name: &str| t.windows.get(name).map_or(0, |w| w.version);
        if windows.iter().any(|(name, log)| current(name) + 1 != log.version) {
            return Ok(false);
        }
        for (name, log) in windows {
            t.windows.insert((*name).to_owned(), (*log).clone());
        }
        Ok(true)
    }
}
