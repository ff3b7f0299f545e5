//! One run: a connection's entities, pulled, compared and written (see [`super`]); the pay
//! pass is [`pay`].

mod pay;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{SyncSettings, SyncWork, Trigger};
use crate::app::{Adapters, AppState};
use crate::crypto::TokenCipher;
use crate::crypto::records::{ContentHash, DataKey, DataKeys, RecordId};
use crate::domain::sync::{
    ChangeOp, Checkpoint, Counts, LastSuccess, RecordKind, Retry, SyncRecord, SyncStatus, WaitReason, refresh_interval,
    retry_delay,
};
use crate::domain::{AccessToken, ConnectionStatus, EntityId, Error, Product};
use crate::events::{ChangeSource, StatusChanged, SyncFinished};
use crate::finch::stream::PayStatementStream;
use crate::finch::types::{BatchAnswer, DirectoryPage, Identified, PayStatementRequest};
use crate::finch::{Data, Fetched, FinchClient, backoff};
use crate::flows::budget::{Budget, Priority, Taken, Window};
use crate::flows::people::index::{Indexed, index_connection, unindex_connection};
use crate::store::data::{Applied, Lease, MAX_CHANGES_PER_WRITE, RecordChange, StoredHash, SyncItem};
use crate::store::{ConnectionRecord, Observation, SyncWorkerStore};

/// What a run came to, for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every entity asked for was run; its state says how it went.
    Finished,
    /// Send `work` again after `delay`: the deadline came, or a window must roll.
    Continue { work: SyncWork, delay: Duration },
    /// Another run holds the connection until `until`; this one was folded into it.
    Busy { until: OffsetDateTime },
    /// No live connection (gone, being disconnected): nothing to do.
    Gone,
}

/// Retries of one Finch request that failed in a way worth retrying (5xx, 408, transport).
const FINCH_RETRIES: u32 = 2;
/// Request ids kept per run, for support.
const KEPT_REQUEST_IDS: usize = 10;
/// A checkpoint older than this is not resumed: Finch's snapshot has moved on.
const CHECKPOINT_MAX_AGE: time::Duration = time::Duration::hours(20);

/// Runs `work` until done or `deadline`.
pub async fn run<A: Adapters>(
    app: &AppState<A>,
    settings: &SyncSettings,
    work: &SyncWork,
    deadline: Instant,
) -> Result<RunOutcome, Error> {
    let store: &dyn SyncWorkerStore = app.store.as_ref();
    let id = &work.connection_id;
    let rec = store.get_connection(id).await?;
    match work.trigger {
        Trigger::Purge => return purge(app, store, rec.as_ref(), work, deadline, settings).await,
        Trigger::Index => return index_only(app, store, rec.as_ref(), deadline, settings).await,
        _ => {}
    }
    let Some(rec) = rec else { return Ok(RunOutcome::Gone) };
    if rec.is_disconnecting_or_gone() || rec.token.is_none() {
        return Ok(RunOutcome::Gone);
    }
    let now = app.clock.now();
    let run_id = match (&work.trigger, &work.run_id) {
        (Trigger::Resume, Some(run)) => run.clone(),
        _ => crate::crypto::random_hex::<12>()?,
    };
    let lease_until = crate::flows::people::index::lease_until(now, deadline);
    let opened = match store.take_lease(id, &run_id, now, lease_until).await? {
        Lease::Taken(k) => match app.cipher.unwrap(&k.wrapped, id, &rec.customer).await {
            Ok(key) => Runner::start(app, settings, store, &rec, run_id.clone(), key, k.next_seq, deadline).await,
            Err(e) => Err(e),
        },
        Lease::Held { until } => {
            fold_into_running(store, &rec, work, now).await?;
            return Ok(RunOutcome::Busy { until });
        }
        Lease::NoKey => match app.cipher.generate(id, &rec.customer).await {
            Ok((key, wrapped)) => {
                if !store.create_key(id, &wrapped, &run_id, lease_until).await? {
                    // Another run made it first (then it holds the lease), or the connection is
                    // being disconnected.
                    return match store.take_lease(id, &run_id, now, lease_until).await? {
                        Lease::Held { until } => Ok(RunOutcome::Busy { until }),
                        _ => Ok(RunOutcome::Gone),
                    };
                }
                Runner::start(app, settings, store, &rec, run_id.clone(), key, 1, deadline).await
            }
            Err(e) => Err(e),
        },
    };
    match opened {
        Ok(mut runner) => {
            runner.payment_hints = work.payments.clone().unwrap_or_default();
            runner.run_all(work).await
        }
        Err(e) => not_started(app, store, &rec, work, &run_id, e).await,
    }
}

/// The run could not start: the connection's data key or its token could not be read (KMS).
/// Each entity asked for says so (`error`, its reason, retried later with the same backoff as a
/// failed pass), the lease is let go, and the message is done: the schedule retries. Only if
/// that cannot be written either does the error go back to the queue, which retries it.
async fn not_started<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SyncWorkerStore,
    rec: &ConnectionRecord,
    work: &SyncWork,
    run_id: &str,
    e: Error,
) -> Result<RunOutcome, Error> {
    let reason = reason_of(&e);
    tracing::error!(connection_id = %rec.connection_id, reason, error = %e.chain(), "sync run could not start; retried later");
    let now = app.clock.now();
    let states: HashMap<EntityId, SyncItem> =
        store.sync_states(&rec.connection_id).await?.into_iter().map(|s| (s.entity.clone(), s)).collect();
    for entity in rec.live_entities().filter(|e| work.entities.as_ref().is_none_or(|es| es.contains(&e.id))) {
        let (mut record, version) = match states.get(&entity.id) {
            Some(i) => (i.record.clone(), i.version),
            None => (SyncRecord::queued(now), 0),
        };
        record.status = SyncStatus::Error { reason: reason.to_owned() };
        record.next_attempt_at = Some(now + retry_delay(Retry::Failed, record.attempts));
        record.attempts += 1;
        record.updated_at = now;
        // A lost race means a newer state was written (a trigger): it is due anyway.
        store.write_sync(&rec.connection_id, &entity.id, &record, version).await?;
        announce(app, rec, &entity.id, &record, false, Some(reason.to_owned()), now).await;
    }
    store.release_lease(&rec.connection_id, run_id).await?;
    Ok(RunOutcome::Finished)
}

/// `Connection Sync Completed` (with the last success's counts) or `… Failed` (with the
/// reason): ids, the state, counts; never data.
async fn announce<A: Adapters>(
    app: &AppState<A>,
    rec: &ConnectionRecord,
    entity: &EntityId,
    record: &SyncRecord,
    completed: bool,
    reason: Option<String>,
    now: OffsetDateTime,
) {
    let last = record.last_success.as_ref().filter(|_| completed);
    let counts = last.map(|l| l.counts).unwrap_or_default();
    let done = SyncFinished {
        connection_id: rec.connection_id.clone(),
        customer_id: rec.customer.clone(),
        entity_id: entity.clone(),
        state: record.status.name(),
        reason,
        added: counts.added,
        updated: counts.updated,
        removed: counts.removed,
        data_retrieved: last.and_then(|l| l.data_retrieved.clone()),
        finished_at: now,
    };
    app.events.publish_sync(completed, &done).await;
}

/// A run asked for while another holds the connection: the running one is asked to run
/// again when it ends (`requested_at` after its start), so nothing the trigger knew is lost.
async fn fold_into_running(
    store: &dyn SyncWorkerStore,
    rec: &ConnectionRecord,
    work: &SyncWork,
    now: OffsetDateTime,
) -> Result<(), Error> {
    if matches!(work.trigger, Trigger::Scheduled | Trigger::Resume) {
        return Ok(());
    }
    for item in store.sync_states(&rec.connection_id).await? {
        if work.entities.as_ref().is_some_and(|es| !es.contains(&item.entity)) {
            continue;
        }
        let mut record = item.record.clone();
        record.requested_at = Some(now);
        store.write_sync(&rec.connection_id, &item.entity, &record, item.version).await?;
    }
    Ok(())
}

/// A disconnected connection's data, gone: its people out of the index, its key shredded, its
/// records deleted; `rec` is its tombstone (none if the disconnect already removed it).
async fn purge<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SyncWorkerStore,
    rec: Option<&ConnectionRecord>,
    work: &SyncWork,
    deadline: Instant,
    settings: &SyncSettings,
) -> Result<RunOutcome, Error> {
    // The connection's people leave the customer's index first (the tombstone names the
    // customer): the index is what still points at the data.
    if let Some(rec) = rec {
        let now = app.clock.now();
        match unindex_connection(store, &rec.customer, &work.connection_id, now, deadline, settings.deadline_margin)
            .await?
        {
            Indexed::Done => {}
            Indexed::Busy => return Ok(RunOutcome::Continue { work: work.clone(), delay: INDEX_BUSY_DELAY }),
            Indexed::Deadline => return Ok(RunOutcome::Continue { work: work.clone(), delay: Duration::ZERO }),
        }
    }
    // The key first, whatever the disconnect did: nothing written after this is readable.
    store.shred_key(&work.connection_id).await?;
    loop {
        if store.purge_some(&work.connection_id, 1_000).await? {
            return Ok(RunOutcome::Finished);
        }
        if deadline.saturating_duration_since(Instant::now()) < settings.deadline_margin {
            return Ok(RunOutcome::Continue { work: work.clone(), delay: Duration::ZERO });
        }
    }
}

/// How long an indexer that found the customer's index busy waits before it tries again.
const INDEX_BUSY_DELAY: Duration = Duration::from_secs(20);
/// How long an indexer that failed waits: the changes stay in the feed.
const INDEX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// A turn of the person indexer alone, for a connection whose run is over.
async fn index_only<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SyncWorkerStore,
    rec: Option<&ConnectionRecord>,
    deadline: Instant,
    settings: &SyncSettings,
) -> Result<RunOutcome, Error> {
    let Some(rec) = rec.filter(|r| !r.is_disconnecting_or_gone()) else { return Ok(RunOutcome::Gone) };
    let Some(k) = store.read_key(&rec.connection_id).await? else { return Ok(RunOutcome::Finished) };
    let key = app.cipher.unwrap(&k.wrapped, &rec.connection_id, &rec.customer).await?;
    Ok(index_turn(app, store, rec, &key, deadline, settings).await)
}

/// The indexer's turn after a run, as the run's outcome: done, or the indexer's own
/// continuation. A failure is logged and retried alone: the run's data is in, and the index
/// catches up from its cursor.
async fn index_turn<A: Adapters>(
    app: &AppState<A>,
    store: &dyn SyncWorkerStore,
    rec: &ConnectionRecord,
    key: &DataKey,
    deadline: Instant,
    settings: &SyncSettings,
) -> RunOutcome {
    let again = |delay| RunOutcome::Continue { work: SyncWork::new(rec.connection_id.clone(), Trigger::Index), delay };
    match index_connection(app, store, rec, key, deadline, settings.deadline_margin).await {
        Ok(Indexed::Done) => RunOutcome::Finished,
        Ok(Indexed::Busy) => again(INDEX_BUSY_DELAY),
        Ok(Indexed::Deadline) => again(Duration::ZERO),
        Err(e) => {
            tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "the person index could not take this connection's changes; retried alone");
            again(INDEX_RETRY_DELAY)
        }
    }
}

/// Why a run of an entity stopped before its end.
enum Stop {
    /// The Lambda deadline is near: the checkpoint is saved.
    Deadline,
    /// Finch's 429: come back when the window has rolled.
    RateLimited(OffsetDateTime),
    /// Finch's 202.
    NotYet(WaitReason),
    /// Finch's 401.
    Reauth {
        reauthenticate: bool,
        message: Option<String>,
        request_id: Option<String>,
    },
    /// The lease is not this run's any more, or the connection's key was shredded.
    LeaseLost,
    /// Products not granted, or refused (403): the pass cannot read these.
    Refused(Vec<String>),
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// A request to Finch, for one entity.
enum Ask<'a> {
    Company,
    Directory { offset: u64, limit: u64 },
    Individuals(&'a [String]),
    Employments(&'a [String]),
    Payments { start: time::Date, end: time::Date },
    PayStatements(&'a [PayStatementRequest<'a>]),
}

impl Ask<'_> {
    fn product(&self) -> &'static str {
        match self {
            Ask::Company => "company",
            Ask::Directory { .. } => "directory",
            Ask::Individuals(_) => "individual",
            Ask::Employments(_) => "employment",
            Ask::Payments { .. } => "payment",
            Ask::PayStatements(_) => "pay_statement",
        }
    }
}

enum Reply {
    Company(Box<RawValue>),
    Directory(DirectoryPage),
    Batch(BatchAnswer),
    /// Finch's JSON, read in place by the pay pass.
    Bytes(Vec<u8>),
    /// Pay statements, read as they arrive.
    Statements(PayStatementStream),
}

/// How an organization pass ended: the stop to pass on, and the entity's state as written.
struct Settled {
    passed_on: Option<Stop>,
    record: SyncRecord,
    version: u64,
}

/// What the Finch calls of one entity's run left behind.
#[derive(Default)]
struct Trace {
    request_ids: Vec<String>,
    data_retrieved: Option<String>,
}

/// The state of one run over a connection.
struct Runner<'a, A: Adapters> {
    app: &'a AppState<A>,
    settings: &'a SyncSettings,
    store: &'a dyn SyncWorkerStore,
    rec: &'a ConnectionRecord,
    finch: FinchClient,
    token: AccessToken,
    key: DataKey,
    run_id: String,
    next_seq: u64,
    deadline: Instant,
    trace: Mutex<Trace>,
    /// Payments a webhook named, until the pay pass has put them on its pending list.
    payment_hints: Vec<String>,
}

impl<'a, A: Adapters> Runner<'a, A> {
    #[allow(clippy::too_many_arguments)]
    async fn start(
        app: &'a AppState<A>,
        settings: &'a SyncSettings,
        store: &'a dyn SyncWorkerStore,
        rec: &'a ConnectionRecord,
        run_id: String,
        key: DataKey,
        next_seq: u64,
        deadline: Instant,
    ) -> Result<Self, Error> {
        let ciphertext = rec.token.as_ref().ok_or_else(|| Error::internal("a live connection without a token"))?;
        let token = app.cipher.decrypt(ciphertext, &rec.connection_id, &rec.customer).await?;
        Ok(Self {
            app,
            settings,
            store,
            rec,
            // Retries are the run's own: each attempt takes from the budget first.
            finch: app.finch.with_max_retries(0),
            token,
            key,
            run_id,
            next_seq,
            deadline,
            trace: Mutex::new(Trace::default()),
            payment_hints: Vec::new(),
        })
    }

    /// The entities left, as the next message of this run.
    fn rest(&self, work: &SyncWork, entities: &[EntityId]) -> SyncWork {
        SyncWork {
            connection_id: work.connection_id.clone(),
            trigger: Trigger::Resume,
            entities: Some(entities.to_vec()),
            run_id: Some(self.run_id.clone()),
            payments: (!self.payment_hints.is_empty()).then(|| self.payment_hints.clone()),
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.app.clock.now()
    }

    /// Every entity asked for, in order; stops at the first that cannot go on.
    async fn run_all(mut self, work: &SyncWork) -> Result<RunOutcome, Error> {
        let entities: Vec<EntityId> = self
            .rec
            .live_entities()
            .map(|e| e.id.clone())
            .filter(|e| work.entities.as_ref().is_none_or(|es| es.contains(e)))
            .collect();
        let mut states: HashMap<EntityId, SyncItem> =
            self.store.sync_states(&self.rec.connection_id).await?.into_iter().map(|s| (s.entity.clone(), s)).collect();
        let mut outcome = RunOutcome::Finished;
        for (i, entity) in entities.iter().enumerate() {
            let item = states.remove(entity);
            match self.run_entity(entity, item, work.trigger).await? {
                None => {}
                Some(Stop::Deadline) => {
                    outcome = RunOutcome::Continue { work: self.rest(work, &entities[i..]), delay: Duration::ZERO };
                    break;
                }
                Some(Stop::RateLimited(until)) => {
                    let wait = Duration::try_from(until - self.now()).unwrap_or(Duration::ZERO);
                    outcome = RunOutcome::Continue { work: self.rest(work, &entities[i..]), delay: wait };
                    break;
                }
                Some(Stop::Reauth { reauthenticate, message, request_id }) => {
                    self.needs_reauth(&entities, reauthenticate, message, request_id).await?;
                    break;
                }
                Some(Stop::LeaseLost) => return Ok(RunOutcome::Gone),
                Some(_) => {}
            }
        }
        // The lease is kept for a continuation (the same run id takes it again).
        if outcome == RunOutcome::Finished {
            self.store.release_lease(&self.rec.connection_id, &self.run_id).await?;
            // The customer's person index takes in what the run changed.
            outcome = index_turn(self.app, self.store, self.rec, &self.key, self.deadline, self.settings).await;
        }
        Ok(outcome)
    }

    /// Runs one entity; `Some` when it stopped early in a way the connection's run must know.
    async fn run_entity(
        &mut self,
        entity: &EntityId,
        item: Option<SyncItem>,
        trigger: Trigger,
    ) -> Result<Option<Stop>, Error> {
        let now = self.now();
        let (mut record, mut version) = match item {
            Some(i) => (i.record, i.version),
            None => (SyncRecord::queued(now), 0),
        };
        let org_due = match trigger {
            // Finch has nothing newer than what was pulled: a scheduled refresh costs nothing.
            Trigger::Scheduled => {
                record.run.is_some()
                    || self.rec.last_successful_sync.is_none()
                    || record.last_success.as_ref().is_none_or(|l| l.snapshot != self.rec.last_successful_sync)
            }
            // A continuation resumes the organization pass if it was cut, else only the pay.
            Trigger::Resume => record.run.is_some() || record.last_success.is_none(),
            _ => true,
        };
        if org_due {
            let settled = self.organization(entity, record, version).await?;
            if settled.passed_on.is_some() {
                return Ok(settled.passed_on);
            }
            (record, version) = (settled.record, settled.version);
            // No organization data now (Finch's 202, a failure): the pay waits for the next run.
            if !matches!(record.status, SyncStatus::Current | SyncStatus::MissingScope { .. }) {
                return Ok(None);
            }
        }
        if self.pay_due(&record, org_due, now) {
            return self.pay(entity, record, version, org_due).await;
        }
        if !org_due {
            let mut next = now + refresh_interval(self.assisted());
            if let Some(retry) = record.pay.as_ref().and_then(|p| p.next_retry()) {
                next = next.min(retry);
            }
            record.next_attempt_at = Some(next);
            record.updated_at = now;
            self.store.write_sync(&self.rec.connection_id, entity, &record, version).await?;
        }
        Ok(None)
    }

    /// The organization pass of `entity`: company, directory, individuals, employments.
    async fn organization(
        &mut self,
        entity: &EntityId,
        mut record: SyncRecord,
        version: u64,
    ) -> Result<Settled, Error> {
        let now = self.now();
        let checkpoint = match record.run.take() {
            Some(c) if now - c.started_at < CHECKPOINT_MAX_AGE => c,
            _ => Checkpoint {
                run_id: self.run_id.clone(),
                started_at: now,
                company_done: false,
                directory_offset: 0,
                pages: 0,
                counts: Counts::default(),
                finch_request_ids: Vec::new(),
                data_retrieved: None,
                missing: Vec::new(),
                incomplete: Vec::new(),
            },
        };
        let priority = if record.last_success.is_none() { Priority::First } else { Priority::Routine };
        record.status = SyncStatus::Syncing;
        record.requested_at = None;
        record.run = Some(checkpoint.clone());
        record.updated_at = now;
        let version = self.save(entity, &mut record, version).await?;
        // People an operator had Perch forget are never stored again.
        let forgotten = self.store.forgotten(&self.rec.connection_id, entity).await?.into_iter().collect();
        let mut pass =
            Pass { entity, priority, hashes: HashMap::new(), checkpoint, record, version, unchanged: 0, forgotten };
        let result = self.pass(&mut pass).await;
        self.settle(pass, result).await
    }

    /// Writes `record` at `version`; a concurrent writer (a trigger setting `requested_at`) is
    /// merged, never overwritten. The new version.
    async fn save(&self, entity: &EntityId, record: &mut SyncRecord, mut version: u64) -> Result<u64, Error> {
        for _ in 0..5 {
            if self.store.write_sync(&self.rec.connection_id, entity, record, version).await? {
                return Ok(version + 1);
            }
            let Some(now) =
                self.store.sync_states(&self.rec.connection_id).await?.into_iter().find(|s| &s.entity == entity)
            else {
                version = 0;
                continue;
            };
            record.requested_at = record.requested_at.max(now.record.requested_at);
            version = now.version;
        }
        Err(Error::internal("a sync state kept changing under its run"))
    }

    fn assisted(&self) -> bool {
        self.rec.summary().assisted
    }

    fn granted(&self, product: &str) -> bool {
        self.rec.products.iter().any(|p| p.as_str() == product)
    }

    /// The pass itself: company, directory pages, removals.
    async fn pass(&mut self, p: &mut Pass<'_>) -> Result<(), Stop> {
        self.load_hashes(p).await?;
        if !p.checkpoint.company_done {
            if self.granted("company") {
                match self.call(p.entity, p.priority, Ask::Company).await? {
                    Some(Reply::Company(raw)) => {
                        let change = self.diff(p, RecordKind::Company, "company", &raw)?;
                        self.apply(&mut p.checkpoint.counts, change.into_iter().collect()).await?;
                        p.checkpoint.counts.unchanged += std::mem::take(&mut p.unchanged);
                    }
                    Some(_) => return Err(Error::internal("Finch's company call answered another shape").into()),
                    None => refused(p, RecordKind::Company),
                }
            } else {
                refused(p, RecordKind::Company);
            }
            p.checkpoint.company_done = true;
        }
        if !self.granted("directory") {
            for kind in [RecordKind::Directory, RecordKind::Individual, RecordKind::Employment] {
                refused(p, kind);
            }
            return Ok(());
        }
        loop {
            let offset = p.checkpoint.directory_offset;
            let limit = self.settings.page_size;
            let Some(Reply::Directory(page)) =
                self.call(p.entity, p.priority, Ask::Directory { offset, limit }).await?
            else {
                for kind in [RecordKind::Directory, RecordKind::Individual, RecordKind::Employment] {
                    refused(p, kind);
                }
                return Ok(());
            };
            let listed = page.individuals.len() as u64;
            let total = page.paging.count;
            self.page(p, page).await?;
            let c = &mut p.checkpoint;
            // Counted with the page: a page retried after a failure counts once.
            c.counts.unchanged += std::mem::take(&mut p.unchanged);
            c.directory_offset += listed;
            c.pages += 1;
            let done = listed == 0 || total.is_none_or(|t| c.directory_offset >= t);
            p.record.run = Some(p.checkpoint.clone());
            p.version = self.save(p.entity, &mut p.record, p.version).await?;
            if done {
                break;
            }
        }
        self.removals(p).await
    }

    /// One directory page: its entries, then the individuals and employments of its ids. Each
    /// kind is written before the next is asked for: memory holds one answer at a time.
    async fn page(&mut self, p: &mut Pass<'_>, page: DirectoryPage) -> Result<(), Stop> {
        let mut ids = Vec::with_capacity(page.individuals.len());
        let mut changes = Vec::new();
        for raw in &page.individuals {
            let Identified { id } = serde_json::from_str(raw.get())
                .map_err(|e| Error::internal(format!("a directory entry without an id: column {}", e.column())))?;
            if p.forgotten.contains(&id) {
                continue;
            }
            changes.extend(self.diff(p, RecordKind::Directory, &id, raw)?);
            ids.push(id);
            // Written as they fill a transaction: sealed changes never pile up for a page.
            if changes.len() >= MAX_CHANGES_PER_WRITE {
                self.apply(&mut p.checkpoint.counts, std::mem::take(&mut changes)).await?;
            }
        }
        drop(page);
        self.apply(&mut p.checkpoint.counts, std::mem::take(&mut changes)).await?;
        let listed: HashSet<String> = ids.iter().cloned().collect();
        for (kind, ask) in
            [(RecordKind::Individual, Ask::Individuals(&ids)), (RecordKind::Employment, Ask::Employments(&ids))]
        {
            if ids.is_empty() || p.checkpoint.missing.iter().any(|m| m == kind.product()) {
                continue;
            }
            if !self.granted(kind.product()) {
                refused(p, kind);
                continue;
            }
            match self.call(p.entity, p.priority, ask).await? {
                Some(Reply::Batch(answer)) => {
                    for item in answer.responses {
                        // An item Finch could not answer (a 404: the person left between the
                        // directory and the batch) keeps its previous version; its id is in the
                        // directory, so it is not removed either.
                        if item.code != 200 || !listed.contains(&item.individual_id) {
                            continue;
                        }
                        changes.extend(self.diff(p, kind, &item.individual_id, &item.body)?);
                        if changes.len() >= MAX_CHANGES_PER_WRITE {
                            self.apply(&mut p.checkpoint.counts, std::mem::take(&mut changes)).await?;
                        }
                    }
                }
                Some(_) => return Err(Error::internal("a batch call answered another shape").into()),
                None => refused(p, kind),
            }
            self.apply(&mut p.checkpoint.counts, std::mem::take(&mut changes)).await?;
        }
        let page_no = p.checkpoint.pages;
        let run = p.checkpoint.run_id.clone();
        self.store.save_seen(&self.rec.connection_id, &run, p.entity, page_no, &ids).await?;
        Ok(())
    }

    /// After a complete pass: what the directory no longer lists is removed, kind by kind, for
    /// the kinds whose pass was complete.
    async fn removals(&mut self, p: &mut Pass<'_>) -> Result<(), Stop> {
        let run = p.checkpoint.run_id.clone();
        let seen: HashSet<String> =
            self.store.load_seen(&self.rec.connection_id, &run, p.entity).await?.into_iter().collect();
        let mut gone: Vec<(RecordKind, String)> = p
            .hashes
            .keys()
            .filter(|(kind, id)| {
                *kind != RecordKind::Company && !seen.contains(id) && !p.checkpoint.incomplete.contains(kind)
            })
            .cloned()
            .collect();
        gone.sort();
        let changes: Vec<RecordChange> = gone
            .into_iter()
            .map(|(kind, id)| {
                p.hashes.remove(&(kind, id.clone()));
                RecordChange { kind, entity: p.entity.clone(), id, op: ChangeOp::Removed, content: None }
            })
            .collect();
        self.apply(&mut p.checkpoint.counts, changes).await
    }

    async fn load_hashes(&self, p: &mut Pass<'_>) -> Result<(), Stop> {
        for kind in RecordKind::ORGANIZATION {
            for h in self.stored_hashes(p.entity, kind, "").await? {
                p.hashes.insert((h.kind, h.id), h.hash);
            }
        }
        Ok(())
    }

    /// Every stored hash of `kind` for `entity` whose id starts with `prefix`.
    async fn stored_hashes(&self, entity: &EntityId, kind: RecordKind, prefix: &str) -> Result<Vec<StoredHash>, Error> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let (page, next) =
                self.store.record_hashes(&self.rec.connection_id, kind, entity, prefix, start.as_deref()).await?;
            out.extend(page);
            start = next;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// The change `raw` makes to what is stored, if any (sealed, hashed).
    fn diff(
        &self,
        p: &mut Pass<'_>,
        kind: RecordKind,
        id: &str,
        raw: &RawValue,
    ) -> Result<Option<RecordChange>, Error> {
        let canonical = canonical(kind, raw)?;
        let slot = p.hashes.entry((kind, id.to_owned()));
        let change = self.seal_change(p.entity, kind, id, &canonical, slot)?;
        if change.is_none() {
            p.unchanged += 1;
        }
        Ok(change)
    }

    /// Hashes `canonical` and, when it differs from the hash in `slot` (or there is none),
    /// seals it as the change to write; `slot` then holds the new hash.
    fn seal_change<K: std::hash::Hash + Eq>(
        &self,
        entity: &EntityId,
        kind: RecordKind,
        id: &str,
        canonical: &[u8],
        slot: std::collections::hash_map::Entry<'_, K, ContentHash>,
    ) -> Result<Option<RecordChange>, Error> {
        let rid = RecordId { connection: &self.rec.connection_id, entity: entity.as_str(), kind: kind.as_str(), id };
        let hash: ContentHash = self.key.content_hash(rid, canonical)?;
        let op = match slot {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if *o.get() == hash {
                    return Ok(None);
                }
                o.insert(hash);
                ChangeOp::Updated
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(hash);
                ChangeOp::Added
            }
        };
        let sealed = self.key.seal(rid, canonical)?;
        Ok(Some(RecordChange { kind, entity: entity.clone(), id: id.to_owned(), op, content: Some((sealed, hash)) }))
    }

    /// Writes changes in transactions, each numbered from the feed's next sequence, and counts
    /// each once it is written: the counts are what the feed received, whatever fails later.
    async fn apply(&mut self, counts: &mut Counts, changes: Vec<RecordChange>) -> Result<(), Stop> {
        for chunk in changes.chunks(MAX_CHANGES_PER_WRITE) {
            let at = self.now();
            match self.store.apply_changes(&self.rec.connection_id, &self.run_id, self.next_seq, chunk, at).await? {
                Applied::Yes => {
                    self.next_seq += chunk.len() as u64;
                    for c in chunk {
                        counts.count(Some(c.op));
                    }
                }
                Applied::LeaseLost => return Err(Stop::LeaseLost),
            }
        }
        Ok(())
    }

    /// One Finch request: the budget first, then the call, retried when worth it. `None` when
    /// Finch refused the product (403).
    async fn call(&self, entity: &EntityId, priority: Priority, ask: Ask<'_>) -> Result<Option<Reply>, Stop> {
        let product = ask.product();
        let windows = [self.settings.limits.product(product), self.settings.limits.ip()];
        let mut attempt = 0;
        loop {
            self.take(&windows, priority).await?;
            let answer = self.send(entity, &ask).await;
            let e = match answer {
                Ok(Data::Ready(Fetched { value, request_id, data_retrieved })) => {
                    let mut t = self.trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    t.request_ids.extend(request_id);
                    if data_retrieved.is_some() {
                        t.data_retrieved = data_retrieved;
                    }
                    return Ok(Some(value));
                }
                Ok(Data::NotYet(reason)) => return Err(Stop::NotYet(reason)),
                Err(e) => e,
            };
            match &e {
                Error::Finch(f) if f.status == 401 => {
                    return Err(Stop::Reauth {
                        reauthenticate: f.needs_reauth(),
                        message: f.message.clone(),
                        request_id: f.request_id.clone(),
                    });
                }
                Error::Finch(f) if f.status == 403 => {
                    tracing::warn!(
                        connection_id = %self.rec.connection_id,
                        product,
                        finch_request_id = f.request_id.as_deref().unwrap_or("-"),
                        "Finch refused a product: its records are not synced"
                    );
                    return Ok(None);
                }
                Error::Finch(f) if f.status == 429 => {
                    // Finch's application window for the product, or the IP's: blocked for a
                    // full period, for every invocation (its advice: wait for it to roll).
                    let window = if f.is_finch_code("finch_application_rl") { &windows[0] } else { &windows[1] };
                    tracing::warn!(
                        connection_id = %self.rec.connection_id,
                        product,
                        finch_code = f.finch_code.as_deref().unwrap_or("-"),
                        finch_request_id = f.request_id.as_deref().unwrap_or("-"),
                        "Finch refused a sync request with 429; its window is blocked until it rolls"
                    );
                    let now = self.now();
                    Budget::new(self.store).block(window, now).await?;
                    let until = now + window.period;
                    return Err(Stop::RateLimited(until));
                }
                _ => {}
            }
            let retryable = match &e {
                Error::Finch(f) => f.is_retryable(),
                Error::FinchTransport { .. } => true,
                _ => false,
            };
            let wait = backoff(attempt);
            if !retryable || attempt >= FINCH_RETRIES || !self.time_for(wait) {
                return Err(Stop::Failed(e));
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Whether `wait` and a Finch call still fit before the deadline's margin.
    fn time_for(&self, wait: Duration) -> bool {
        self.deadline.saturating_duration_since(Instant::now()) > self.settings.deadline_margin + wait
    }

    /// Takes one request from `windows`, waiting while the wait fits before the deadline.
    async fn take(&self, windows: &[Window], priority: Priority) -> Result<(), Stop> {
        let budget = Budget::new(self.store);
        loop {
            if !self.time_for(Duration::ZERO) {
                return Err(Stop::Deadline);
            }
            let now = self.now();
            match budget.try_take(windows, priority, now).await? {
                Taken::Yes => return Ok(()),
                Taken::WaitUntil(at) => {
                    let wait = Duration::try_from(at - now).unwrap_or(Duration::ZERO).max(Duration::from_millis(50));
                    if !self.time_for(wait) {
                        return Err(Stop::RateLimited(at));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn send(&self, entity: &EntityId, ask: &Ask<'_>) -> Result<Data<Reply>, Error> {
        let (f, t, e) = (&self.finch, &self.token, entity.as_str());
        macro_rules! map {
            ($call:expr, $wrap:expr) => {
                match $call.await? {
                    Data::Ready(x) => Data::Ready(Fetched {
                        value: $wrap(x.value),
                        request_id: x.request_id,
                        data_retrieved: x.data_retrieved,
                    }),
                    Data::NotYet(r) => Data::NotYet(r),
                }
            };
        }
        Ok(match ask {
            Ask::Company => map!(f.company_record(t, e), Reply::Company),
            Ask::Directory { offset, limit } => map!(f.directory_page(t, e, *offset, *limit), Reply::Directory),
            Ask::Individuals(ids) => map!(f.individuals(t, e, ids, self.granted(Product::Ssn.as_str())), Reply::Batch),
            Ask::Employments(ids) => map!(f.employments(t, e, ids), Reply::Batch),
            Ask::Payments { start, end } => map!(f.payments(t, e, *start, *end), Reply::Bytes),
            Ask::PayStatements(requests) => {
                // The answer is read at the pace the pass writes it: it may take until the
                // deadline's margin, which is left for saving where it stopped.
                let within = self
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(self.settings.deadline_margin / 2)
                    .max(Duration::from_secs(1));
                map!(f.pay_statements(t, e, requests, within), Reply::Statements)
            }
        })
    }

    /// Writes how the pass ended, and announces a completed or failed one; `Some` for the stops
    /// the connection's run must act on.
    async fn settle(&self, mut p: Pass<'_>, result: Result<(), Stop>) -> Result<Settled, Error> {
        if let Err(Stop::LeaseLost) = result {
            return Ok(Settled { passed_on: Some(Stop::LeaseLost), record: p.record, version: p.version });
        }
        let now = self.now();
        self.fold_trace(&mut p.checkpoint);
        let (passed_on, event) = self.conclude(&mut p.record, &p.checkpoint, p.entity, result, now);
        p.record.updated_at = now;
        let version = self.save(p.entity, &mut p.record, p.version).await?;
        if let Some((completed, reason)) = event {
            announce(self.app, self.rec, p.entity, &p.record, completed, reason, now).await;
        }
        Ok(Settled { passed_on, record: p.record, version })
    }

    /// The Finch request ids (the last few) and snapshot time the pass's calls left, into its
    /// checkpoint.
    fn fold_trace(&self, c: &mut Checkpoint) {
        let mut t = self.trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.finch_request_ids.append(&mut t.request_ids);
        let skip = c.finch_request_ids.len().saturating_sub(KEPT_REQUEST_IDS);
        c.finch_request_ids.drain(..skip);
        if t.data_retrieved.is_some() {
            c.data_retrieved = t.data_retrieved.take();
        }
    }

    /// The entity's state after the pass: status, next attempt, checkpoint kept or cleared. The
    /// stop passed on, and the event to publish (`completed`, reason), if any.
    #[allow(clippy::type_complexity)]
    fn conclude(
        &self,
        r: &mut SyncRecord,
        c: &Checkpoint,
        entity: &EntityId,
        result: Result<(), Stop>,
        now: OffsetDateTime,
    ) -> (Option<Stop>, Option<(bool, Option<String>)>) {
        // Kept for a continuation and a retry; cleared below when the pass is over.
        r.run = Some(c.clone());
        match result {
            Ok(()) => {
                r.run = None;
                r.status = if c.missing.is_empty() {
                    SyncStatus::Current
                } else {
                    SyncStatus::MissingScope { products: c.missing.clone() }
                };
                r.attempts = 0;
                r.last_success = Some(LastSuccess {
                    finished_at: now,
                    data_retrieved: c.data_retrieved.clone(),
                    finch_request_ids: c.finch_request_ids.clone(),
                    counts: c.counts,
                    snapshot: self.rec.last_successful_sync.clone(),
                });
                // Asked again while running: due at once; else at Finch's next refresh.
                r.next_attempt_at = Some(if r.requested_at.is_some_and(|at| at >= c.started_at) {
                    now
                } else {
                    now + refresh_interval(self.assisted())
                });
                (None, Some((true, None)))
            }
            Err(Stop::Deadline) => (Some(Stop::Deadline), None),
            Err(Stop::RateLimited(until)) => {
                r.next_attempt_at = Some(until);
                (Some(Stop::RateLimited(until)), None)
            }
            Err(Stop::NotYet(reason)) => {
                r.status = SyncStatus::WaitingForFinch { reason };
                r.next_attempt_at = Some(now + retry_delay(Retry::NotReady, r.attempts));
                r.attempts += 1;
                // The next attempt starts over: Finch had nothing, or its snapshot changes.
                r.run = None;
                (None, None)
            }
            Err(Stop::Reauth { reauthenticate, message, request_id }) => {
                r.status = SyncStatus::NeedsReauth;
                r.next_attempt_at = None;
                r.run = None;
                (Some(Stop::Reauth { reauthenticate, message, request_id }), Some((false, Some("needs_reauth".into()))))
            }
            Err(Stop::LeaseLost) => (Some(Stop::LeaseLost), None),
            // Never raised by the organization pass (it records refusals per kind and goes on).
            Err(Stop::Refused(products)) => {
                r.run = None;
                r.status = SyncStatus::MissingScope { products };
                (None, None)
            }
            Err(Stop::Failed(e)) => {
                let reason = reason_of(&e);
                tracing::error!(
                    connection_id = %self.rec.connection_id,
                    entity_id = %entity,
                    reason,
                    error = %e.chain(),
                    "sync run failed; retried later from its checkpoint"
                );
                r.status = SyncStatus::Error { reason: reason.to_owned() };
                r.next_attempt_at = Some(now + retry_delay(Retry::Failed, r.attempts));
                r.attempts += 1;
                (None, Some((false, Some(reason.to_owned()))))
            }
        }
    }

    /// A 401: every entity waits for the employer, and the connection says so.
    async fn needs_reauth(
        &self,
        entities: &[EntityId],
        reauthenticate: bool,
        message: Option<String>,
        request_id: Option<String>,
    ) -> Result<(), Error> {
        let now = self.now();
        for item in self.store.sync_states(&self.rec.connection_id).await? {
            if !entities.contains(&item.entity) || item.record.status == SyncStatus::NeedsReauth {
                continue;
            }
            let mut record = item.record;
            record.status = SyncStatus::NeedsReauth;
            record.next_attempt_at = None;
            record.run = None;
            record.updated_at = now;
            self.store.write_sync(&self.rec.connection_id, &item.entity, &record, item.version).await?;
        }
        // As the status sweep reads a 401: `reauthenticate_user` asks the employer to log in
        // again; any other 401 means the token was revoked outside Perch.
        let status = if reauthenticate { ConnectionStatus::Reauth } else { ConnectionStatus::Disconnected };
        let observation = Observation {
            status: status.clone(),
            status_message: message,
            last_successful_sync: self.rec.last_successful_sync.clone(),
            products: None,
            entities: None,
            employer: None,
            request_id,
            observed_at: now,
        };
        if self.rec.status != status
            && self.store.record_check(&self.rec.connection_id, self.rec.version, &observation).await?
        {
            let previous = self.rec.status.finch().cloned();
            let change = StatusChanged::of(self.rec, previous, status, ChangeSource::DataSync, now);
            self.app.events.publish(&change).await;
        }
        Ok(())
    }
}

/// A product refused (403) or never granted: reported missing, and its kind's pass is not
/// complete (its records are never removed for it).
fn refused(p: &mut Pass<'_>, kind: RecordKind) {
    let c = &mut p.checkpoint;
    if !c.missing.iter().any(|m| m == kind.product()) {
        c.missing.push(kind.product().to_owned());
    }
    if !c.incomplete.contains(&kind) {
        c.incomplete.push(kind);
    }
}

/// A record as stored: Finch's JSON re-serialised, so that Finch's key order or spacing
/// changing is not a change of the record.
fn canonical(kind: RecordKind, raw: &RawValue) -> Result<Vec<u8>, Error> {
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| Error::internal(format!("a {} record Perch cannot read: column {}", kind.as_str(), e.column())))?;
    serde_json::to_vec(&value).map_err(|e| Error::internal_from("canonicalising a record", e))
}

/// A failure's reason for the app: a code, never a message (which could quote data).
fn reason_of(e: &Error) -> &'static str {
    match e {
        Error::Finch(f) if f.status >= 500 => "finch_unavailable",
        Error::Finch(f) if f.status == 422 => "finch_rejected_request",
        Error::Finch(_) => "finch_error",
        Error::FinchTransport { timed_out: true, .. } => "finch_timeout",
        Error::FinchTransport { .. } => "finch_unreachable",
        Error::Aws { service: "kms", .. } => "key_unavailable",
        Error::Aws { .. } => "storage_unavailable",
        Error::Internal(m, _) if m.contains("cannot read") || m.contains("without an id") => "finch_malformed_reply",
        _ => "internal_error",
    }
}

/// One entity's pass in progress.
struct Pass<'e> {
    entity: &'e EntityId,
    priority: Priority,
    /// Every stored record's hash for this entity: what is compared, and what is removed.
    hashes: HashMap<(RecordKind, String), ContentHash>,
    /// Where the pass is; saved into `record.run` with each page.
    checkpoint: Checkpoint,
    record: SyncRecord,
    version: u64,
    /// Records found unchanged on the page in progress, counted when the page is done.
    unchanged: u64,
    /// Individuals never stored again (forgotten by an operator).
    forgotten: HashSet<String>,
}
