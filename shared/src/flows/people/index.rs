//! The indexer: a connection's change feed, read from where the index stopped, into the
//! customer's person index (see [`super`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::app::{Adapters, AppState};
use crate::crypto::match_keys::{CustomerMatchKeys, MatchKeyring};
use crate::crypto::records::{DataKey, RecordId};
use crate::crypto::{random_bytes, random_hex};
use crate::domain::people::{Ambiguity, KeyHolders, Link, MatchKey, MatchRule, Person, SourceLink, SourceRef};
use crate::domain::sync::RecordKind;
use crate::domain::{ConnectionId, CustomerId, EntityId, Error, PersonId};
use crate::store::ConnectionRecord;
use crate::store::people::{IndexStore, IndexWrites, PersonIndex};

/// Feed entries read a page.
const FEED_PAGE: usize = 1_000;

/// How an indexer's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed {
    /// The index has every change of the connection's feed so far.
    Done,
    /// Another indexer holds the customer's index: come back shortly.
    Busy,
    /// The deadline is near: what was read is written; the rest next turn.
    Deadline,
}

fn new_person_id() -> Result<PersonId, Error> {
    let id = uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid();
    Ok(PersonId::parse(id.to_string())?)
}

/// The customer's match keys: unwrapped, or made (and stored wrapped) the first time.
pub async fn match_keys<A: Adapters>(
    app: &AppState<A>,
    store: &dyn PersonIndex,
    customer: &CustomerId,
) -> Result<CustomerMatchKeys, Error> {
    for _ in 0..2 {
        if let Some(wrapped) = store.read_match_key(customer).await? {
            return app.cipher.unwrap_match_key(&wrapped, customer).await;
        }
        let (keys, wrapped) = app.cipher.generate_match_key(customer).await?;
        if store.create_match_key(customer, &wrapped).await? {
            return Ok(keys);
        }
        // Another indexer made one first: use that.
    }
    Err(Error::internal("the customer's match key could not be made or read"))
}

/// Runs `work` holding the customer's index lease (one indexer a customer: its writes read what
/// they change) until `until`, when a crashed holder's lease lapses; `None` when another holds it.
async fn under_index_lease<T>(
    store: &dyn IndexStore,
    customer: &CustomerId,
    now: OffsetDateTime,
    until: OffsetDateTime,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<Option<T>, Error> {
    let holder = random_hex::<12>()?;
    if !store.take_index(customer, &holder, now, until).await? {
        return Ok(None);
    }
    let result = work.await;
    let released = store.release_index(customer, &holder).await;
    // The work's own failure says more than the release's; an unreleased lease lapses anyway.
    let out = result?;
    released?;
    Ok(Some(out))
}

/// A lease for a turn that ends by `deadline`, with a minute to spare (a sync run's and an
/// indexer's alike).
pub(crate) fn lease_until(now: OffsetDateTime, deadline: Instant) -> OffsetDateTime {
    now + deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(60)
}

/// Indexes `rec`'s feed from where the index stopped, under the customer's index lease.
pub async fn index_connection<A: Adapters>(
    app: &AppState<A>,
    store: &dyn IndexStore,
    rec: &ConnectionRecord,
    key: &DataKey,
    deadline: Instant,
    margin: Duration,
) -> Result<Indexed, Error> {
    let now = app.clock.now();
    let work = index_under_lease(app, store, rec, key, deadline, margin);
    Ok(under_index_lease(store, &rec.customer, now, lease_until(now, deadline), work).await?.unwrap_or(Indexed::Busy))
}

async fn index_under_lease<A: Adapters>(
    app: &AppState<A>,
    store: &dyn IndexStore,
    rec: &ConnectionRecord,
    key: &DataKey,
    deadline: Instant,
    margin: Duration,
) -> Result<Indexed, Error> {
    let customer = &rec.customer;
    let connection = &rec.connection_id;
    let mut cursor = store.index_cursor(customer, connection).await?;
    let mut hasher: Option<CustomerMatchKeys> = None;
    loop {
        let entries = store.feed(connection, cursor, FEED_PAGE).await?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(Indexed::Done) };
        let mut sources: Vec<SourceRef> = Vec::new();
        let mut seen = HashSet::new();
        for e in entries.iter().filter(|e| matches!(e.kind, RecordKind::Directory | RecordKind::Individual)) {
            let s = SourceRef {
                connection_id: connection.clone(),
                entity_id: e.entity.clone(),
                individual_id: e.id.clone(),
            };
            if seen.insert(s.clone()) {
                sources.push(s);
            }
        }
        drop(entries);
        if !sources.is_empty() {
            if hasher.is_none() {
                hasher = Some(match_keys(app, store, customer).await?);
            }
            let keys = hasher.as_ref().ok_or_else(|| Error::internal("match keys unavailable"))?;
            let current = current_keys(store, rec, key, keys, &sources).await?;
            let mut batch = Batch::load(store, customer, &current).await?;
            let now = app.clock.now();
            for (source, keys) in current {
                batch.reconcile(store, customer, source, keys, now).await?;
            }
            let mut writes = batch.into_writes();
            writes.cursor = Some((connection.clone(), last));
            store.write_index(customer, &writes).await?;
        } else {
            store
                .write_index(customer, &IndexWrites { cursor: Some((connection.clone(), last)), ..Default::default() })
                .await?;
        }
        cursor = last;
        if deadline.saturating_duration_since(Instant::now()) < margin {
            return Ok(Indexed::Deadline);
        }
    }
}

/// Each source's match keys as its records are now: `None` when it is gone from the
/// connection (no directory entry and no individual left).
async fn current_keys(
    store: &dyn IndexStore,
    rec: &ConnectionRecord,
    key: &DataKey,
    hasher: &CustomerMatchKeys,
    sources: &[SourceRef],
) -> Result<Vec<(SourceRef, Option<Vec<MatchKey>>)>, Error> {
    let mut wanted = Vec::with_capacity(sources.len() * 2);
    for s in sources {
        wanted.push((RecordKind::Directory, s.entity_id.clone(), s.individual_id.clone()));
        wanted.push((RecordKind::Individual, s.entity_id.clone(), s.individual_id.clone()));
    }
    let mut found: HashMap<(RecordKind, EntityId, String), crate::store::data::StoredRecord> = HashMap::new();
    for chunk in wanted.chunks(100) {
        for r in store.records(&rec.connection_id, chunk).await? {
            found.insert((r.kind, r.entity.clone(), r.id.clone()), r);
        }
    }
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        let directory = found.contains_key(&(RecordKind::Directory, s.entity_id.clone(), s.individual_id.clone()));
        let individual = found.remove(&(RecordKind::Individual, s.entity_id.clone(), s.individual_id.clone()));
        let keys = match individual {
            Some(r) => {
                let rid = RecordId {
                    connection: &rec.connection_id,
                    entity: r.entity.as_str(),
                    kind: r.kind.as_str(),
                    id: &r.id,
                };
                let plain = zeroize::Zeroizing::new(key.open(rid, &r.sealed)?);
                let value: serde_json::Value = serde_json::from_slice(&plain)
                    .map_err(|e| Error::internal(format!("a stored individual is not JSON: column {}", e.column())))?;
                Some(hasher.keys_of(&value)?)
            }
            None if directory => Some(Vec::new()),
            None => None,
        };
        out.push((s.clone(), keys));
    }
    Ok(out)
}

/// The index items one page touches, read once, changed in memory, written together.
#[derive(Default)]
struct Batch {
    links: HashMap<SourceRef, Option<SourceLink>>,
    holders: HashMap<MatchKey, Vec<PersonId>>,
    persons: HashMap<PersonId, Option<Person>>,
    dirty_links: HashSet<SourceRef>,
    dirty_holders: HashSet<MatchKey>,
    dirty_persons: HashSet<PersonId>,
}

/// What matching a source found.
enum Found {
    One(PersonId, MatchRule),
    Ambiguous(MatchRule, Vec<PersonId>),
    None,
}

impl Batch {
    /// Reads the links of the page's sources, the holders of their keys (new and old), and the
    /// persons either names.
    async fn load(
        store: &dyn IndexStore,
        customer: &CustomerId,
        current: &[(SourceRef, Option<Vec<MatchKey>>)],
    ) -> Result<Self, Error> {
        let mut b = Batch::default();
        let sources: Vec<SourceRef> = current.iter().map(|(s, _)| s.clone()).collect();
        for chunk in sources.chunks(100) {
            for l in store.source_links(customer, chunk).await? {
                b.links.insert(l.source.clone(), Some(l));
            }
        }
        for s in &sources {
            b.links.entry(s.clone()).or_insert(None);
        }
        let mut keys: Vec<MatchKey> = current.iter().flat_map(|(_, k)| k.iter().flatten().cloned()).collect();
        keys.extend(b.links.values().flatten().flat_map(|l| l.keys.iter().cloned()));
        keys.sort();
        keys.dedup();
        b.load_holders(store, customer, &keys).await?;
        let mut persons: Vec<PersonId> = b.links.values().flatten().map(|l| l.person.clone()).collect();
        persons.extend(b.holders.values().flatten().cloned());
        b.load_persons(store, customer, persons).await?;
        Ok(b)
    }

    /// Reads the holders of `keys` not read yet (linking keys only: the others have none).
    async fn load_holders(
        &mut self,
        store: &dyn IndexStore,
        customer: &CustomerId,
        keys: &[MatchKey],
    ) -> Result<(), Error> {
        let missing: Vec<MatchKey> =
            keys.iter().filter(|k| k.rule.links() && !self.holders.contains_key(k)).cloned().collect();
        for chunk in missing.chunks(100) {
            for h in store.key_holders(customer, chunk).await? {
                self.holders.insert(h.key, h.persons);
            }
        }
        for k in missing {
            self.holders.entry(k).or_default();
        }
        Ok(())
    }

    async fn load_persons(
        &mut self,
        store: &dyn IndexStore,
        customer: &CustomerId,
        mut ids: Vec<PersonId>,
    ) -> Result<(), Error> {
        ids.retain(|p| !self.persons.contains_key(p));
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(100) {
            for p in store.persons(customer, chunk).await? {
                self.persons.insert(p.person_id.clone(), Some(p));
            }
        }
        for p in ids {
            self.persons.entry(p).or_insert(None);
        }
        Ok(())
    }

    fn person(&self, id: &PersonId) -> Option<&Person> {
        self.persons.get(id).and_then(Option::as_ref)
    }

    fn person_mut(&mut self, id: &PersonId) -> Option<&mut Person> {
        self.dirty_persons.insert(id.clone());
        self.persons.get_mut(id).and_then(Option::as_mut)
    }

    /// Brings one source's place in the index up to date with its keys (`None`: it is gone);
    /// then any source whose link it showed to be unsafe (see [`Batch::namesakes`]).
    async fn reconcile(
        &mut self,
        store: &dyn IndexStore,
        customer: &CustomerId,
        source: SourceRef,
        keys: Option<Vec<MatchKey>>,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let mut queue = vec![(source, keys)];
        while let Some((source, keys)) = queue.pop() {
            for (again, keys) in self.reconcile_one(store, customer, source, keys, now).await? {
                queue.push((again, Some(keys)));
            }
        }
        Ok(())
    }

    /// One source; the sources to decide again after it.
    async fn reconcile_one(
        &mut self,
        store: &dyn IndexStore,
        customer: &CustomerId,
        source: SourceRef,
        keys: Option<Vec<MatchKey>>,
        now: OffsetDateTime,
    ) -> Result<Vec<(SourceRef, Vec<MatchKey>)>, Error> {
        let link = self.links.get(&source).cloned().flatten();
        let Some(keys) = keys else {
            if let Some(l) = link {
                self.unlink(&l, now);
            }
            return Ok(Vec::new());
        };
        self.load_for(store, customer, &keys).await?;
        let ssn = keys.iter().find(|k| k.rule == MatchRule::Ssn).map(|k| k.hash.clone());
        if let Some(l) = link {
            let conflict = self.person(&l.person).is_some_and(|p| {
                p.sources.len() > 1 && {
                    // The person's SSN without this source's own.
                    let mut others = p.clone();
                    remove_keys(&mut others.keys, &l.keys);
                    others.ssn_conflicts(ssn.as_deref())
                }
            });
            if !conflict {
                let alone = self.person(&l.person).is_some_and(|p| p.sources.len() == 1);
                if alone {
                    // A person of one source may now match someone (a date of birth filled in).
                    if let Found::One(other, rule) = self.find(&source, &keys, ssn.as_deref(), Some(&l.person)) {
                        self.unlink(&l, now);
                        self.link(source, keys, other, Some(rule), now);
                        return Ok(Vec::new());
                    }
                }
                self.rekey(&l, keys, now);
                return Ok(Vec::new());
            }
            tracing::warn!(person_id = %l.person, "a source's SSN no longer matches its person's other sources: it is split off");
            self.unlink(&l, now);
        }
        // Sources of this entity linked by the name and birthday this source shares with them:
        // namesakes, so that key never linked them safely. Each is split off into a person of
        // its own (its keys still showing the namesake to whoever comes next), and decided
        // again after this one.
        let unsafe_links = self.namesakes(&source, &keys);
        for l in &unsafe_links {
            self.unlink(l, now);
            self.alone(l.source.clone(), l.keys.clone(), None, now)?;
        }
        match self.find(&source, &keys, ssn.as_deref(), None) {
            Found::One(person, rule) => self.link(source, keys, person, Some(rule), now),
            Found::Ambiguous(rule, candidates) => {
                self.alone(source, keys, Some(Ambiguity { rule, candidates, found_at: now }), now)?;
            }
            Found::None => self.alone(source, keys, None, now)?,
        }
        Ok(unsafe_links.into_iter().map(|l| (l.source, l.keys)).collect())
    }

    /// Makes `source` a person of its own.
    fn alone(
        &mut self,
        source: SourceRef,
        keys: Vec<MatchKey>,
        ambiguity: Option<Ambiguity>,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        let id = new_person_id()?;
        let person = Person {
            person_id: id.clone(),
            sources: Vec::new(),
            keys: Vec::new(),
            ambiguities: ambiguity.into_iter().collect(),
            created_at: now,
            updated_at: now,
        };
        self.persons.insert(id.clone(), Some(person));
        self.link(source, keys, id, None, now);
        Ok(())
    }

    /// The links of other sources of `source`'s entity that share its name-and-birthday key and
    /// were linked by it to a person of several sources: made before their namesake was known.
    fn namesakes(&self, source: &SourceRef, keys: &[MatchKey]) -> Vec<SourceLink> {
        let Some(k) = keys.iter().find(|k| k.rule == MatchRule::NameAndDob) else { return Vec::new() };
        let mut out = Vec::new();
        for p in self.holders.get(k).into_iter().flatten().filter_map(|id| self.person(id)) {
            if p.sources.len() < 2 {
                continue;
            }
            for l in &p.sources {
                if l.source != *source && l.source.same_entity(source) && l.rule == Some(MatchRule::NameAndDob) {
                    if let Some(Some(link)) = self.links.get(&l.source) {
                        out.push(link.clone());
                    } else {
                        out.push(SourceLink {
                            source: l.source.clone(),
                            person: p.person_id.clone(),
                            keys: vec![k.clone()],
                        });
                    }
                }
            }
        }
        out
    }

    /// Makes sure the holders of `keys`, and the persons they name, are loaded.
    async fn load_for(
        &mut self,
        store: &dyn IndexStore,
        customer: &CustomerId,
        keys: &[MatchKey],
    ) -> Result<(), Error> {
        self.load_holders(store, customer, keys).await?;
        let persons: Vec<PersonId> =
            keys.iter().flat_map(|k| self.holders.get(k).into_iter().flatten().cloned()).collect();
        self.load_persons(store, customer, persons).await
    }

    /// The person `keys` name: never `except`, never one with a source in the same entity as
    /// `source`, never one whose SSN differs.
    ///
    /// The SSN decides when it names one person. Otherwise every other key that names anyone
    /// must name the same one person: a name and birthday pointing at one person and a work
    /// e-mail at another is two people who look alike, and the source is left apart. A key
    /// that a source of this entity also holds (a namesake's name and birthday) says nothing
    /// about which of the two this is, and is not counted. Nor is a key that names a person with
    /// another e-mail at the source's domain ([`Person::email_conflicts`]: the same name and
    /// birthday at two companies of one group, or two providers of one, is a coincidence of two
    /// people): the key decides nothing, that person is never chosen, and when no other key
    /// decides, the look-alike is reported.
    fn find(&self, source: &SourceRef, keys: &[MatchKey], ssn: Option<&str>, except: Option<&PersonId>) -> Found {
        let mut agreed: Option<(MatchRule, Vec<PersonId>)> = None;
        let mut ambiguous: Option<(MatchRule, Vec<PersonId>)> = None;
        for rule in MatchRule::LINKING {
            let Some(k) = keys.iter().find(|k| k.rule == rule) else { continue };
            let (holders, others): (Vec<&Person>, Vec<&Person>) = self
                .holders
                .get(k)
                .into_iter()
                .flatten()
                .filter(|p| Some(*p) != except)
                .filter_map(|p| self.person(p))
                .filter(|p| !p.ssn_conflicts(ssn))
                // Equal SSNs are one person, whatever their e-mails.
                .partition(|p| rule == MatchRule::Ssn || !p.email_conflicts(keys));
            let namesake = holders.iter().chain(&others).any(|p| p.has_sibling_of(source));
            let candidates: Vec<PersonId> =
                holders.iter().filter(|p| !p.has_sibling_of(source)).map(|p| p.person_id.clone()).collect();
            if !others.is_empty() {
                // A key a look-alike shares names no one safely, like a namesake's; the
                // look-alike is reported with the rest.
                let mut named = candidates;
                named.extend(others.iter().filter(|p| !p.has_sibling_of(source)).map(|p| p.person_id.clone()));
                if !named.is_empty() {
                    ambiguous.get_or_insert((rule, named));
                }
                continue;
            }
            if candidates.is_empty() {
                continue;
            }
            if rule == MatchRule::Ssn && candidates.len() == 1 {
                return Found::One(candidates[0].clone(), rule);
            }
            if namesake {
                ambiguous.get_or_insert((rule, candidates));
                continue;
            }
            agreed = Some(match agreed {
                None => (rule, candidates),
                Some((first, among)) => {
                    let both: Vec<PersonId> = among.iter().filter(|p| candidates.contains(p)).cloned().collect();
                    if both.is_empty() {
                        // The keys disagree: none is chosen.
                        let mut all = among;
                        all.extend(candidates);
                        return Found::Ambiguous(first, all);
                    }
                    (first, both)
                }
            });
        }
        match (agreed, ambiguous) {
            (Some((rule, one)), _) if one.len() == 1 => Found::One(one[0].clone(), rule),
            // Precision first: several people share the keys; none is chosen.
            (Some((rule, several)), _) | (None, Some((rule, several))) => Found::Ambiguous(rule, several),
            (None, None) => Found::None,
        }
    }

    /// Adds `source` with `keys` to `person`.
    fn link(
        &mut self,
        source: SourceRef,
        keys: Vec<MatchKey>,
        person: PersonId,
        rule: Option<MatchRule>,
        now: OffsetDateTime,
    ) {
        self.hold(&keys, &person);
        if let Some(p) = self.person_mut(&person) {
            p.sources.retain(|l| l.source != source);
            p.sources.push(Link { source: source.clone(), rule, linked_at: now });
            p.keys.extend(keys.iter().cloned());
            p.updated_at = now;
        }
        self.dirty_links.insert(source.clone());
        self.links.insert(source.clone(), Some(SourceLink { source, person, keys }));
    }

    /// Takes a source out of its person (the person goes when it was the last).
    fn unlink(&mut self, l: &SourceLink, now: OffsetDateTime) {
        let mut gone = false;
        let mut dropped_keys = Vec::new();
        if let Some(p) = self.person_mut(&l.person) {
            p.sources.retain(|x| x.source != l.source);
            remove_keys(&mut p.keys, &l.keys);
            p.updated_at = now;
            gone = p.sources.is_empty();
            dropped_keys = l.keys.iter().filter(|k| !p.keys.contains(k)).cloned().collect();
        }
        if gone {
            self.persons.insert(l.person.clone(), None);
            dropped_keys = l.keys.clone();
        }
        self.release(dropped_keys, &l.person);
        self.dirty_links.insert(l.source.clone());
        self.links.insert(l.source.clone(), None);
    }

    /// A linked source's keys changed: the person and the holders follow; the link stays.
    fn rekey(&mut self, l: &SourceLink, keys: Vec<MatchKey>, now: OffsetDateTime) {
        if l.keys == keys {
            return;
        }
        let mut dropped = Vec::new();
        if let Some(p) = self.person_mut(&l.person) {
            remove_keys(&mut p.keys, &l.keys);
            p.keys.extend(keys.iter().cloned());
            p.updated_at = now;
            dropped = l.keys.iter().filter(|k| !p.keys.contains(k)).cloned().collect();
        }
        self.release(dropped, &l.person);
        self.hold(&keys, &l.person);
        self.dirty_links.insert(l.source.clone());
        self.links
            .insert(l.source.clone(), Some(SourceLink { source: l.source.clone(), person: l.person.clone(), keys }));
    }

    /// Names `person` as a holder of its linking `keys` (the others name no one).
    fn hold(&mut self, keys: &[MatchKey], person: &PersonId) {
        for k in keys.iter().filter(|k| k.rule.links()) {
            let holders = self.holders.entry(k.clone()).or_default();
            if !holders.contains(person) {
                holders.push(person.clone());
                self.dirty_holders.insert(k.clone());
            }
        }
    }

    /// `person` no longer holds `keys`.
    fn release(&mut self, keys: Vec<MatchKey>, person: &PersonId) {
        for k in keys.into_iter().filter(|k| k.rule.links()) {
            if let Some(h) = self.holders.get_mut(&k) {
                h.retain(|p| p != person);
                self.dirty_holders.insert(k);
            }
        }
    }

    fn into_writes(mut self) -> IndexWrites {
        let mut w = IndexWrites::default();
        for k in self.dirty_holders {
            match self.holders.remove(&k) {
                Some(persons) if !persons.is_empty() => w.keys.push(KeyHolders { key: k, persons }),
                _ => w.keys_removed.push(k),
            }
        }
        for p in self.dirty_persons {
            match self.persons.remove(&p) {
                Some(Some(person)) => w.persons.push(person),
                Some(None) => w.persons_removed.push(p),
                None => {}
            }
        }
        for s in self.dirty_links {
            match self.links.remove(&s) {
                Some(Some(l)) => w.sources.push(l),
                _ => w.sources_removed.push(s),
            }
        }
        w
    }
}

/// Removes one occurrence of each of `gone` from `keys`.
fn remove_keys(keys: &mut Vec<MatchKey>, gone: &[MatchKey]) {
    for g in gone {
        if let Some(i) = keys.iter().position(|k| k == g) {
            keys.remove(i);
        }
    }
}

/// Takes a disconnected connection's sources out of the customer's index, under its lease.
pub async fn unindex_connection(
    store: &dyn IndexStore,
    customer: &CustomerId,
    connection: &ConnectionId,
    now: OffsetDateTime,
    deadline: Instant,
    margin: Duration,
) -> Result<Indexed, Error> {
    let work = async {
        loop {
            let links = store.connection_links(customer, connection, None, 500).await?;
            if links.is_empty() {
                store.drop_cursor(customer, connection).await?;
                return Ok(Indexed::Done);
            }
            let current: Vec<(SourceRef, Option<Vec<MatchKey>>)> =
                links.iter().map(|l| (l.source.clone(), None)).collect();
            let mut batch = Batch::load(store, customer, &current).await?;
            for l in &links {
                batch.unlink(l, now);
            }
            store.write_index(customer, &batch.into_writes()).await?;
            if deadline.saturating_duration_since(Instant::now()) < margin {
                return Ok(Indexed::Deadline);
            }
        }
    };
    Ok(under_index_lease(store, customer, now, lease_until(now, deadline), work).await?.unwrap_or(Indexed::Busy))
}

/// What taking a person out of the index removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Unindexed {
    pub persons: usize,
    pub sources: usize,
    pub keys: usize,
}

/// Takes `person` out of the customer's index (every source, and the keys only it had), under
/// the index lease; `None` when another indexer holds it (try again).
pub async fn unindex_person(
    store: &dyn IndexStore,
    customer: &CustomerId,
    person: &Person,
    now: OffsetDateTime,
) -> Result<Option<Unindexed>, Error> {
    let work = async {
        let current: Vec<(SourceRef, Option<Vec<MatchKey>>)> =
            person.sources.iter().map(|l| (l.source.clone(), None)).collect();
        let mut batch = Batch::load(store, customer, &current).await?;
        for (source, _) in &current {
            if let Some(Some(l)) = batch.links.get(source).cloned() {
                batch.unlink(&l, now);
            }
        }
        // A person whose sources were already gone from the index.
        if batch.persons.get(&person.person_id).is_none_or(Option::is_some) {
            batch.persons.insert(person.person_id.clone(), None);
            batch.dirty_persons.insert(person.person_id.clone());
        }
        let writes = batch.into_writes();
        store.write_index(customer, &writes).await?;
        Ok(Unindexed {
            persons: writes.persons_removed.len(),
            sources: writes.sources_removed.len(),
            keys: writes.keys_removed.len(),
        })
    };
    under_index_lease(store, customer, now, now + Duration::from_secs(120), work).await
}
