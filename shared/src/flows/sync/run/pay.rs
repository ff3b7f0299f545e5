//! The pay pass: an entity's payments and pay statements (DATA.md §1.6–§1.7).
//!
//! **Listing.** `/employer/payment` has no paging: a window of pay dates is its only bound, and
//! a payment names every person on it (36 bytes each), so a month of a 20,000-person company is
//! megabytes and two years is fifty. Windows go newest first (an app wants this year's pay
//! before 2024's) and are fitted to [`super::super::PaySettings::listing_bytes`] by the size of
//! the last answer: a 30-person company lists its whole history in one call, a 20,000-person
//! one in windows of weeks. The backfill lists back to Finch's lookback; each refresh lists the
//! last [`super::super::PaySettings::refresh_days`] again. A payment is stored without its
//! `individual_ids` (its statements name the people; 20,000 ids are over DynamoDB's 400 KB item
//! limit) under the id `<pay_date>.<payment_id>`, so a window of dates is a range of ids and a
//! payment no longer listed in a window is found and removed, with its statements.
//!
//! **Statements.** A new or changed payment joins the pending list (ids and offsets in the
//! sync state, so nothing is lost to a deadline or a checkpoint's age). Up to ten payments a
//! request, each from its own offset, `limit` up to 5,000 — Finch's caps, 50,000 statements
//! and ~60 MB of JSON in one answer — read as it arrives ([`crate::finch::stream`]): each
//! statement is compared and sealed as it is parsed, written 49 to a transaction, and the
//! payment's offset saved after each, so memory is a transaction's worth whatever the answer's
//! size, and a deadline or a body cut short mid-answer loses nothing and re-reads at most one
//! transaction's statements. A payment whose statements Finch is still
//! fetching (a 202 inside the 200) waits alone, with the same backoff as a connection's 202,
//! while the others go on; the entity is current with those few waiting. A re-fetched payment
//! is compared statement by statement; those no longer listed are removed.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::value::RawValue;
use time::{Date, Duration as Days};

use super::{Ask, FINCH_RETRIES, Reply, Runner, Stop, canonical, reason_of};
use crate::app::Adapters;
use crate::crypto::records::ContentHash;
use crate::domain::sync::{
    ChangeOp, Counts, Listing, PayState, PaySync, PendingPayment, RecordKind, Retry, SyncRecord, SyncStatus,
    payment_id_of, payment_record_id, refresh_interval, retry_delay, statement_record_id,
};
use crate::domain::{EntityId, Error};
use crate::finch::MAX_PAYMENTS_PER_REQUEST;
use crate::finch::backoff;
use crate::finch::stream::{Event, PayStatementStream};
use crate::finch::types::{PayStatementRequest, PaymentKey, StatementKey};
use crate::flows::budget::Priority;
use crate::store::data::{MAX_CHANGES_PER_WRITE, RecordChange};

/// The products pay needs.
const PAY_PRODUCTS: [&str; 2] = ["payment", "pay_statement"];
/// Listing windows stay between a week and three years of pay dates.
const MIN_WINDOW_DAYS: u32 = 7;
const MAX_WINDOW_DAYS: u32 = 1_100;

/// One entity's pay pass in progress.
pub(super) struct PayRun<'e> {
    entity: &'e EntityId,
    record: SyncRecord,
    version: u64,
    /// Stored payments' hashes by record id (loaded at the first listing).
    payments: Option<HashMap<String, ContentHash>>,
    /// The payments whose statements are being read in this invocation.
    open: HashMap<String, OpenPayment>,
    /// Individuals never stored again (forgotten by an operator).
    forgotten: HashSet<String>,
}

impl PayRun<'_> {
    fn pay(&mut self) -> &mut PaySync {
        self.record.pay.get_or_insert_with(|| PaySync::new(Date::MIN, MIN_WINDOW_DAYS))
    }
}

/// A payment whose statements are being read.
struct OpenPayment {
    /// The stored statements' hashes by record id, for a re-fetch (empty for a first fetch,
    /// whose statements are new whatever is stored: see `seen`).
    stored: HashMap<String, ContentHash>,
    /// Record ids listed so far in this fetch, as 64-bit digests: 20,000 people in 160 KB.
    seen: HashSet<u64>,
    /// Whether this invocation read it from its first statement (only then can it tell who is
    /// no longer listed).
    whole: bool,
    /// A payment read again (changed, or named by a webhook), compared with what is stored.
    refetch: bool,
}

/// A payment asked for in one request, and how far its answer has come.
struct Asked {
    id: String,
    offset: u64,
    limit: u64,
    /// Statements of its item read so far.
    read: u64,
    /// Its item's end was read.
    ended: bool,
}

/// A record id's digest (SipHash under fixed keys: the same in every invocation).
fn digest(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, &time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// The date in a payment's record id.
fn date_of(record_id: &str) -> Option<Date> {
    record_id.split_once('.').and_then(|(d, _)| parse_date(d))
}

/// A payment as stored: Finch's, without `individual_ids`.
fn payment_canonical(raw: &RawValue) -> Result<Vec<u8>, Error> {
    let mut value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| Error::internal(format!("a payment record Perch cannot read: column {}", e.column())))?;
    if let Some(o) = value.as_object_mut() {
        o.remove("individual_ids");
    }
    serde_json::to_vec(&value).map_err(|e| Error::internal_from("canonicalising a payment", e))
}

impl<A: Adapters> Runner<'_, A> {
    /// Whether the entity's pay has something to do now.
    pub(super) fn pay_due(&self, record: &SyncRecord, org_ran: bool, now: time::OffsetDateTime) -> bool {
        let Some(pay) = &record.pay else { return true };
        if !PAY_PRODUCTS.iter().all(|p| self.granted(p)) {
            return !matches!(pay.state, PayState::MissingScope { .. });
        }
        org_ran
            || pay.listing.is_some()
            || !pay.backfill_listed()
            || matches!(
                pay.state,
                PayState::WaitingForFinch { .. } | PayState::Error { .. } | PayState::MissingScope { .. }
            )
            || pay.pending.iter().any(|p| p.retry_at.is_none_or(|at| at <= now))
    }

    /// The pay pass of `entity`, its state written at each step and at its end; `Some` for the
    /// stops the connection's run must act on.
    pub(super) async fn pay(
        &mut self,
        entity: &EntityId,
        record: SyncRecord,
        version: u64,
        refresh: bool,
    ) -> Result<Option<Stop>, Error> {
        let now = self.now();
        let settings = &self.settings.pay;
        let from = settings.from(now.date());
        let forgotten = self.store.forgotten(&self.rec.connection_id, entity).await?.into_iter().collect();
        let mut run = PayRun { entity, record, version, payments: None, open: HashMap::new(), forgotten };
        let first_window = settings.first_window_days;
        let pay = run.record.pay.get_or_insert_with(|| PaySync::new(from, first_window));
        pay.from = from;
        let missing: Vec<String> = PAY_PRODUCTS.iter().filter(|p| !self.granted(p)).map(|p| (*p).to_owned()).collect();
        let result =
            if missing.is_empty() { self.pay_pass(&mut run, refresh).await } else { Err(Stop::Refused(missing)) };
        self.settle_pay(run, result, refresh).await
    }

    async fn pay_pass(&mut self, run: &mut PayRun<'_>, refresh: bool) -> Result<(), Stop> {
        let today = self.now().date();
        let refresh_days = self.settings.pay.refresh_days;
        let pay = run.pay();
        if pay.listing.is_none() {
            let stop = if !pay.backfill_listed() {
                Some(pay.from)
            } else if refresh {
                let last = pay.listed_through.unwrap_or(pay.from);
                Some((last - Days::days(i64::try_from(refresh_days).unwrap_or(45))).max(pay.from))
            } else {
                None
            };
            pay.listing = stop.map(|stop| Listing { next_end: today, stop: stop.min(today), as_of: today });
        }
        if !self.payment_hints.is_empty() {
            self.take_hints(run).await?;
        }
        while run.pay().listing.is_some() {
            self.list_window(run).await?;
        }
        if let Some(cutoff) = self.settings.pay.cutoff(today) {
            self.prune(run, cutoff).await?;
        }
        self.statements(run).await
    }

    /// The stored payments' hashes, read once a run (the listing, the hints and the pruning all
    /// compare against them).
    async fn load_payments(&self, run: &mut PayRun<'_>) -> Result<(), Error> {
        if run.payments.is_none() {
            let stored = self.stored_hashes(run.entity, RecordKind::Payment, "").await?;
            run.payments = Some(stored.into_iter().map(|h| (h.id, h.hash)).collect());
        }
        Ok(())
    }

    /// Payments a webhook named: their statements are read again, and the listing reaches back
    /// to their pay dates (the payment itself may have changed).
    async fn take_hints(&mut self, run: &mut PayRun<'_>) -> Result<(), Stop> {
        self.load_payments(run).await?;
        let hints = std::mem::take(&mut self.payment_hints);
        let known: Vec<(String, Date)> = run
            .payments
            .iter()
            .flatten()
            .filter(|(id, _)| hints.iter().any(|h| payment_id_of(id) == h))
            .filter_map(|(id, _)| Some((payment_id_of(id).to_owned(), date_of(id)?)))
            .collect();
        let today = self.now().date();
        let pay = run.pay();
        for (id, date) in known {
            queue_payment(pay, &id, date, true, None);
            let listing = pay.listing.get_or_insert(Listing { next_end: today, stop: date, as_of: today });
            listing.stop = listing.stop.min(date).max(pay.from);
        }
        Ok(())
    }

    /// Lists one window of payments: new and changed ones are stored and their statements
    /// pending; those no longer listed are removed; the next window is sized from this answer.
    async fn list_window(&mut self, run: &mut PayRun<'_>) -> Result<(), Stop> {
        let Some(listing) = run.pay().listing else { return Ok(()) };
        let days = i64::from(run.pay().window_days.max(1));
        let start = (listing.next_end - Days::days(days - 1)).max(listing.stop);
        let end = listing.next_end;
        self.load_payments(run).await?;
        let reply = self.call(run.entity, Priority::Routine, Ask::Payments { start, end }).await?;
        let Some(Reply::Bytes(body)) = reply else {
            return match reply {
                None => Err(Stop::Refused(vec!["payment".to_owned()])),
                Some(_) => Err(Error::internal("Finch's payment call answered another shape").into()),
            };
        };
        let (changes, listed) = self.read_listing(run, &body)?;
        let window_bytes = body.len() as u64;
        drop(body);
        self.remove_unlisted(run, start..=end, &listed, changes).await?;
        let pay = run.pay();
        // The next window sized so its answer is about the target size.
        let per_day = window_bytes / (end - start).whole_days().max(0).unsigned_abs().saturating_add(1);
        let fitted = self.settings.pay.listing_bytes / per_day.max(1);
        pay.window_days = u32::try_from(fitted).unwrap_or(MAX_WINDOW_DAYS).clamp(MIN_WINDOW_DAYS, MAX_WINDOW_DAYS);
        if start <= listing.stop {
            pay.listing = None;
            pay.listed_from = Some(pay.listed_from.map_or(listing.stop, |f| f.min(listing.stop)));
            pay.listed_through = Some(pay.listed_through.map_or(listing.as_of, |t| t.max(listing.as_of)));
        } else {
            pay.listing = Some(Listing { next_end: start - Days::days(1), ..listing });
        }
        self.save_pay(run).await?;
        Ok(())
    }

    /// A window's payments against the stored ones: the changes to write (each new or changed
    /// payment's statements queued), and every payment listed, Finch's id to its record id.
    fn read_listing(
        &self,
        run: &mut PayRun<'_>,
        body: &[u8],
    ) -> Result<(Vec<RecordChange>, HashMap<String, String>), Error> {
        let listed: Vec<&RawValue> = serde_json::from_slice(body)
            .map_err(|e| Error::internal(format!("a payment list Perch cannot read: column {}", e.column())))?;
        let mut changes = Vec::new();
        let mut listed_ids: HashMap<String, String> = HashMap::new();
        for raw in &listed {
            let key: PaymentKey = serde_json::from_str(raw.get())
                .map_err(|e| Error::internal(format!("a payment without an id: column {}", e.column())))?;
            // A payment without a readable pay date cannot be placed in a window: it is
            // skipped (and logged, with ids only) rather than stored where no window finds it.
            let Some(pay_date) = key.pay_date.as_deref().and_then(parse_date) else {
                tracing::warn!(connection_id = %self.rec.connection_id, entity_id = %run.entity, payment_id = %key.id, "a payment without a pay date was skipped");
                continue;
            };
            let id = payment_record_id(pay_date, &key.id);
            let canonical = payment_canonical(raw)?;
            let slot = run.payments.get_or_insert_with(HashMap::new).entry(id.clone());
            if let Some(change) = self.seal_change(run.entity, RecordKind::Payment, &id, &canonical, slot)? {
                let refetch = change.op == ChangeOp::Updated;
                changes.push(change);
                let people = key.individual_ids.as_ref().map(|ids| ids.len() as u64);
                queue_payment(run.pay(), &key.id, pay_date, refetch, people);
            }
            listed_ids.insert(key.id.clone(), id);
        }
        Ok((changes, listed_ids))
    }

    /// Writes `changes` with the removal of every payment stored in `window` and not `listed`
    /// there; one that left Finch's list altogether takes its statements with it.
    async fn remove_unlisted(
        &mut self,
        run: &mut PayRun<'_>,
        window: std::ops::RangeInclusive<Date>,
        listed: &HashMap<String, String>,
        mut changes: Vec<RecordChange>,
    ) -> Result<(), Stop> {
        let gone: Vec<String> = run
            .payments
            .as_ref()
            .map(|m| {
                m.keys()
                    .filter(|id| date_of(id).is_some_and(|d| window.contains(&d)))
                    .filter(|id| listed.get(payment_id_of(id)) != Some(*id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for id in gone {
            if let Some(m) = run.payments.as_mut() {
                m.remove(&id);
            }
            changes.push(RecordChange {
                kind: RecordKind::Payment,
                entity: run.entity.clone(),
                id: id.clone(),
                op: ChangeOp::Removed,
                content: None,
            });
            // Moved to another pay date (listed again, under its new id): its statements stay.
            let payment = payment_id_of(&id).to_owned();
            if !listed.contains_key(&payment) {
                run.pay().pending.retain(|p| p.id != payment);
                self.apply_pay(run, std::mem::take(&mut changes)).await?;
                self.remove_statements(run, &payment).await?;
            }
        }
        self.apply_pay(run, changes).await
    }

    /// Deletes the pay older than the retention allows (`cutoff`, by pay date): payments and
    /// their statements, as removals in the feed.
    async fn prune(&mut self, run: &mut PayRun<'_>, cutoff: Date) -> Result<(), Stop> {
        self.load_payments(run).await?;
        let mut old: Vec<String> = run
            .payments
            .iter()
            .flatten()
            .filter(|(id, _)| date_of(id).is_some_and(|d| d < cutoff))
            .map(|(id, _)| id.clone())
            .collect();
        old.sort();
        for id in old {
            if let Some(m) = run.payments.as_mut() {
                m.remove(&id);
            }
            let payment = payment_id_of(&id).to_owned();
            run.pay().pending.retain(|p| p.id != payment);
            let change = RecordChange {
                kind: RecordKind::Payment,
                entity: run.entity.clone(),
                id,
                op: ChangeOp::Removed,
                content: None,
            };
            self.apply_pay(run, vec![change]).await?;
            self.remove_statements(run, &payment).await?;
        }
        Ok(())
    }

    /// Removes every stored statement of `payment`.
    async fn remove_statements(&mut self, run: &mut PayRun<'_>, payment: &str) -> Result<(), Stop> {
        let prefix = format!("{payment}.");
        let stored = self.stored_hashes(run.entity, RecordKind::PayStatement, &prefix).await?;
        let changes: Vec<RecordChange> = stored
            .into_iter()
            .map(|h| RecordChange {
                kind: RecordKind::PayStatement,
                entity: run.entity.clone(),
                id: h.id,
                op: ChangeOp::Removed,
                content: None,
            })
            .collect();
        run.open.remove(payment);
        self.apply_pay(run, changes).await
    }

    /// Fetches the pending payments' statements, those due, until none is left.
    async fn statements(&mut self, run: &mut PayRun<'_>) -> Result<(), Stop> {
        let page = self.settings.pay.statements_page;
        // Answers broken off in a row: asked again from where they stopped, like a call.
        let mut broken = 0;
        loop {
            let now = self.now();
            let mut budget = self.settings.pay.statements_per_request;
            let mut asked: Vec<Asked> = Vec::new();
            for p in run.pay().pending.iter().filter(|p| p.retry_at.is_none_or(|at| at <= now)) {
                if asked.len() == MAX_PAYMENTS_PER_REQUEST || budget == 0 {
                    break;
                }
                // As many as it has left, when known: small payments share a request.
                let left = p.expected.map_or(page, |n| n.saturating_sub(p.offset).max(1));
                let limit = page.min(budget).min(left);
                budget -= limit;
                asked.push(Asked { id: p.id.clone(), offset: p.offset, limit, read: 0, ended: false });
            }
            if asked.is_empty() {
                return Ok(());
            }
            let requests: Vec<PayStatementRequest<'_>> = asked
                .iter()
                .map(|a| PayStatementRequest { payment_id: &a.id, limit: a.limit, offset: a.offset })
                .collect();
            let reply = self.call(run.entity, Priority::Routine, Ask::PayStatements(&requests)).await?;
            let mut answer = match reply {
                Some(Reply::Statements(s)) => s,
                None => return Err(Stop::Refused(vec!["pay_statement".to_owned()])),
                Some(_) => return Err(Error::internal("Finch's pay-statement call answered another shape").into()),
            };
            let read = self.read_answer(run, &mut asked, &mut answer, now).await;
            drop(answer);
            if read.is_ok() {
                // A payment asked for and not answered at all waits like one Finch could not answer.
                for a in asked.iter().filter(|a| !a.ended) {
                    defer(run.pay(), &a.id, Retry::Failed, "finch_item_missing", now);
                }
            }
            // Whatever stopped the answer, what was read of it is written and its offsets kept.
            self.save_pay(run).await?;
            match read {
                Err(Stop::Failed(e @ Error::FinchTransport { .. })) => {
                    let wait = backoff(broken);
                    if broken >= FINCH_RETRIES || !self.time_for(wait) {
                        return Err(Stop::Failed(e));
                    }
                    tracing::warn!(
                        connection_id = %self.rec.connection_id,
                        entity_id = %run.entity,
                        error = %e.chain(),
                        "a pay-statement answer broke off: asked again from the last statement written"
                    );
                    tokio::time::sleep(wait).await;
                    broken += 1;
                }
                Err(stop) => return Err(stop),
                Ok(()) => broken = 0,
            }
        }
    }

    /// Reads one answer as it arrives: its statements compared and written in transactions,
    /// each payment's offset moved past what was written, and each item's end acted on. Stops
    /// (keeping what was written) at the deadline's margin or when the answer breaks off.
    async fn read_answer(
        &mut self,
        run: &mut PayRun<'_>,
        asked: &mut [Asked],
        answer: &mut PayStatementStream,
        now: time::OffsetDateTime,
    ) -> Result<(), Stop> {
        let mut changes = Vec::new();
        let ended = loop {
            let event = match answer.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(Stop::Failed(e)),
                Some(Ok(event)) => event,
            };
            match event {
                Event::Statement { payment_id, raw } => {
                    let Some(a) = asked.iter_mut().find(|a| *a.id == *payment_id && !a.ended) else { continue };
                    self.open_payment(run, &a.id).await?;
                    let position = a.offset + a.read;
                    a.read += 1;
                    changes.extend(self.statement(run, &a.id, position, &raw)?);
                    if changes.len() >= MAX_CHANGES_PER_WRITE {
                        self.write_read(run, asked, &mut changes).await?;
                        if !self.time_for(std::time::Duration::ZERO) {
                            break Err(Stop::Deadline);
                        }
                    }
                }
                Event::End(end) => {
                    self.write_read(run, asked, &mut changes).await?;
                    let Some(a) = asked.iter_mut().find(|a| a.id == end.payment_id && !a.ended) else { continue };
                    a.ended = true;
                    match end.code {
                        200 => self.page_end(run, a, end.statements, end.paging.and_then(|p| p.count)).await?,
                        202 => {
                            let reason = end.finch_code.unwrap_or_else(|| "data_sync_in_progress".to_owned());
                            defer(run.pay(), &a.id, Retry::NotReady, &reason, now);
                        }
                        404 => defer(run.pay(), &a.id, Retry::Failed, "payment_not_found", now),
                        _ => defer(run.pay(), &a.id, Retry::Failed, "finch_item_error", now),
                    }
                }
            }
        };
        self.write_read(run, asked, &mut changes).await?;
        ended
    }

    /// The payment's comparison state for this invocation, loaded at its first statement.
    async fn open_payment(&mut self, run: &mut PayRun<'_>, payment: &str) -> Result<(), Stop> {
        if run.open.contains_key(payment) {
            return Ok(());
        }
        let Some(pending) = run.pay().pending.iter().find(|p| p.id == payment).cloned() else { return Ok(()) };
        let mut open = OpenPayment {
            stored: HashMap::new(),
            seen: HashSet::new(),
            whole: pending.offset == 0,
            refetch: pending.refetch,
        };
        if pending.refetch || pending.offset > 0 {
            let stored = self.stored_hashes(run.entity, RecordKind::PayStatement, &format!("{payment}.")).await?;
            if pending.refetch {
                open.stored = stored.into_iter().map(|h| (h.id, h.hash)).collect();
            } else {
                // A first fetch resumed: everything stored came from its earlier pages, so only
                // their ids count (a person listed again gets the next id), as 8-byte digests:
                // ten payments of 20,000 resumed at once would be ~25 MB as ids and hashes.
                open.seen = stored.iter().map(|h| digest(&h.id)).collect();
            }
        }
        run.open.insert(payment.to_owned(), open);
        Ok(())
    }

    /// One statement, compared with what is stored: the change to write, if any.
    fn statement(
        &self,
        run: &mut PayRun<'_>,
        payment: &str,
        position: u64,
        raw: &RawValue,
    ) -> Result<Option<RecordChange>, Stop> {
        let key: StatementKey = serde_json::from_str(raw.get())
            .map_err(|e| Error::internal(format!("a pay statement Perch cannot read: column {}", e.column())))?;
        if key.individual_id.as_ref().is_some_and(|i| run.forgotten.contains(i)) {
            return Ok(None);
        }
        // A statement without a person is kept, under its place in the payment.
        let person = key.individual_id.unwrap_or_else(|| format!("unknown-{position}"));
        let canonical = canonical(RecordKind::PayStatement, raw)?;
        let Some(open) = run.open.get_mut(payment) else { return Ok(None) };
        let mut n = 1;
        let id = loop {
            let id = statement_record_id(payment, &person, n);
            if open.seen.insert(digest(&id)) {
                break id;
            }
            n += 1;
        };
        let slot = open.stored.entry(id.clone());
        Ok(self.seal_change(run.entity, RecordKind::PayStatement, &id, &canonical, slot)?)
    }

    /// Writes the changes read so far, then moves each payment's offset past the statements
    /// read and saves it: an offset never runs ahead of what is written, and lags it by one
    /// transaction at most, so a stop anywhere (the deadline, a body cut short, a crash) neither
    /// loses a statement nor reads more than a transaction's worth again.
    async fn write_read(
        &mut self,
        run: &mut PayRun<'_>,
        asked: &[Asked],
        changes: &mut Vec<RecordChange>,
    ) -> Result<(), Stop> {
        let mut moved = false;
        for a in asked.iter().filter(|a| a.read > 0 && !a.ended) {
            if let Some(p) = run.pay().pending.iter().find(|p| p.id == a.id) {
                moved |= a.offset + a.read > p.offset;
            }
        }
        if changes.is_empty() && !moved {
            return Ok(());
        }
        self.apply_pay(run, std::mem::take(changes)).await?;
        for a in asked.iter().filter(|a| a.read > 0 && !a.ended) {
            if let Some(p) = run.pay().pending.iter_mut().find(|p| p.id == a.id) {
                p.offset = p.offset.max(a.offset + a.read);
            }
        }
        Ok(self.save_pay(run).await?)
    }

    /// The end of one payment's page (its statements written): the payment is done when its
    /// last page is in, and what a whole re-fetch no longer lists is removed.
    async fn page_end(&mut self, run: &mut PayRun<'_>, a: &Asked, listed: u64, count: Option<u64>) -> Result<(), Stop> {
        let payment = a.id.as_str();
        self.open_payment(run, payment).await?;
        let offset = a.offset + listed;
        let done = listed == 0 || count.map_or(listed < a.limit, |count| offset >= count);
        if !done {
            if let Some(p) = run.pay().pending.iter_mut().find(|p| p.id == payment) {
                p.offset = offset;
                p.expected = count.or(p.expected);
            }
            return Ok(());
        }
        if let Some(open) = run.open.remove(payment)
            && open.whole
            && open.refetch
        {
            let gone: Vec<RecordChange> = open
                .stored
                .keys()
                .filter(|id| !open.seen.contains(&digest(id)))
                .map(|id| RecordChange {
                    kind: RecordKind::PayStatement,
                    entity: run.entity.clone(),
                    id: id.clone(),
                    op: ChangeOp::Removed,
                    content: None,
                })
                .collect();
            self.apply_pay(run, gone).await?;
        }
        run.pay().pending.retain(|p| p.id != payment);
        Ok(())
    }

    /// Writes pay changes and keeps the pay state's counts in step.
    async fn apply_pay(&mut self, run: &mut PayRun<'_>, changes: Vec<RecordChange>) -> Result<(), Stop> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut counts = Counts::default();
        let (mut payments, mut statements) = (0i64, 0i64);
        for c in &changes {
            let delta = match c.op {
                ChangeOp::Added => 1,
                ChangeOp::Removed => -1,
                ChangeOp::Updated => 0,
            };
            match c.kind {
                RecordKind::Payment => payments += delta,
                _ => statements += delta,
            }
        }
        self.apply(&mut counts, changes).await?;
        let pay = run.pay();
        pay.payments = u32::try_from((i64::from(pay.payments) + payments).max(0)).unwrap_or(u32::MAX);
        pay.statements =
            u64::try_from((i64::try_from(pay.statements).unwrap_or(i64::MAX) + statements).max(0)).unwrap_or(0);
        Ok(())
    }

    /// Writes the pay state as it is now.
    async fn save_pay(&mut self, run: &mut PayRun<'_>) -> Result<(), Error> {
        let now = self.now();
        let pay = run.pay();
        pay.payments_done = pay.payments.saturating_sub(u32::try_from(pay.pending.len()).unwrap_or(u32::MAX));
        run.record.updated_at = now;
        run.version = self.save(run.entity, &mut run.record, run.version).await?;
        Ok(())
    }

    /// How the pay pass ended, written; the stops the connection's run must act on passed on.
    async fn settle_pay(
        &mut self,
        mut run: PayRun<'_>,
        result: Result<(), Stop>,
        refresh_planned: bool,
    ) -> Result<Option<Stop>, Error> {
        let now = self.now();
        let entity = run.entity;
        let (passed_on, retry) = {
            let pay = run.pay();
            match result {
                Ok(()) => {
                    let waiting_only = pay.pending.iter().all(|p| p.retry_at.is_some_and(|at| at > now));
                    if pay.listing.is_none() && waiting_only {
                        pay.state = PayState::Current;
                        pay.last_success = Some(now);
                        pay.attempts = 0;
                    } else {
                        pay.state = PayState::Backfilling;
                    }
                    (None, pay.next_retry())
                }
                // Not granted (configuration: nothing to log), or refused by Finch (logged with
                // its request id where the 403 was read).
                Err(Stop::Refused(products)) => {
                    pay.state = PayState::MissingScope { products };
                    (None, None)
                }
                Err(Stop::NotYet(reason)) => {
                    let at = now + retry_delay(Retry::NotReady, pay.attempts);
                    pay.attempts += 1;
                    pay.state = PayState::WaitingForFinch { reason };
                    (None, Some(at))
                }
                Err(Stop::Failed(e)) => {
                    let reason = reason_of(&e);
                    tracing::error!(connection_id = %self.rec.connection_id, entity_id = %entity, reason, error = %e.chain(), "pay pass failed; retried later");
                    let at = now + retry_delay(Retry::Failed, pay.attempts);
                    pay.attempts += 1;
                    pay.state = PayState::Error { reason: reason.to_owned() };
                    (None, Some(at))
                }
                Err(stop @ (Stop::Deadline | Stop::RateLimited(_))) => {
                    pay.state = PayState::Backfilling;
                    (Some(stop), None)
                }
                Err(stop) => return Ok(Some(stop)),
            }
        };
        if let Some(Stop::RateLimited(until)) = &passed_on {
            // For the schedule, should the continuation's message be lost.
            run.record.next_attempt_at = Some(*until);
        } else if passed_on.is_none() {
            // The organization pass of this invocation planned the next run; a continuation of
            // the pay alone plans it from the last organization pass.
            let refresh =
                run.record.last_success.as_ref().map_or(now, |l| l.finished_at) + refresh_interval(self.assisted());
            let base = if refresh_planned { run.record.next_attempt_at.unwrap_or(refresh) } else { refresh.max(now) };
            run.record.next_attempt_at = Some(retry.map_or(base, |at| base.min(at)));
        }
        // The organization pass may have left it syncing (a continuation of the pay only).
        if run.record.status == SyncStatus::Syncing && run.record.run.is_none() {
            run.record.status = SyncStatus::Current;
        }
        self.save_pay(&mut run).await?;
        Ok(passed_on)
    }
}

/// Puts payment `id` on the pending list (again from its first statement if it was).
fn queue_payment(pay: &mut PaySync, id: &str, pay_date: Date, refetch: bool, expected: Option<u64>) {
    match pay.pending.iter_mut().find(|p| p.id == id) {
        Some(p) => {
            p.offset = 0;
            p.refetch |= refetch;
            p.pay_date = pay_date;
            p.expected = expected;
        }
        None => pay.pending.push(PendingPayment {
            id: id.to_owned(),
            pay_date,
            offset: 0,
            expected,
            refetch,
            attempts: 0,
            retry_at: None,
            waiting: None,
        }),
    }
    // Newest first: an app wants this month's pay before 2024's.
    pay.pending.sort_by(|a, b| b.pay_date.cmp(&a.pay_date).then_with(|| a.id.cmp(&b.id)));
}

/// A payment Finch could not answer now: asked again after the backoff, alone.
fn defer(pay: &mut PaySync, id: &str, kind: Retry, reason: &str, now: time::OffsetDateTime) {
    if let Some(p) = pay.pending.iter_mut().find(|p| p.id == id) {
        p.retry_at = Some(now + retry_delay(kind, p.attempts));
        p.attempts += 1;
        p.waiting = Some(reason.to_owned());
    }
}
