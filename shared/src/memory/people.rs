//! The person index in memory (the DynamoDB adapter's items, as maps), with its lease.

use std::collections::BTreeMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::store::MemoryStore;
use crate::crypto::records::WrappedDataKey;
use crate::domain::people::{KeyHolders, MatchKey, Person, SourceLink, SourceRef};
use crate::domain::{ConnectionId, CustomerId, Error, PersonId};
use crate::store::people::{IndexWrites, PersonIndex};

#[derive(Default)]
pub(super) struct PeopleTables {
    match_keys: BTreeMap<CustomerId, WrappedDataKey>,
    leases: BTreeMap<CustomerId, (String, OffsetDateTime)>,
    cursors: BTreeMap<(CustomerId, ConnectionId), u64>,
    persons: BTreeMap<(CustomerId, PersonId), Person>,
    sources: BTreeMap<(CustomerId, SourceRef), SourceLink>,
    keys: BTreeMap<(CustomerId, MatchKey), KeyHolders>,
}

impl MemoryStore {
    /// How many index items a customer has (tests of what a disconnect or a forget leaves).
    pub fn index_items(&self, customer: &CustomerId) -> usize {
        let t = self.tables();
        let p = &t.people;
        p.cursors.keys().filter(|(c, _)| c == customer).count()
            + p.persons.keys().filter(|(c, _)| c == customer).count()
            + p.sources.keys().filter(|(c, _)| c == customer).count()
            + p.keys.keys().filter(|(c, _)| c == customer).count()
    }

    /// Every item of a customer's index as JSON — holders, persons, sources — as a table dump
    /// would show them (tests that look for plaintext).
    pub fn index_dump(&self, customer: &CustomerId) -> String {
        let t = self.tables();
        let p = &t.people;
        let mine = |c: &CustomerId| c == customer;
        serde_json::json!({
            "keys": p.keys.iter().filter(|((c, _), _)| mine(c)).map(|(_, v)| v).collect::<Vec<_>>(),
            "persons": p.persons.iter().filter(|((c, _), _)| mine(c)).map(|(_, v)| v).collect::<Vec<_>>(),
            "sources": p.sources.iter().filter(|((c, _), _)| mine(c)).map(|(_, v)| v).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

#[async_trait]
impl PersonIndex for MemoryStore {
    async fn read_match_key(&self, customer: &CustomerId) -> Result<Option<WrappedDataKey>, Error> {
        Ok(self.enter("read_match_key")?.people.match_keys.get(customer).cloned())
    }

    async fn create_match_key(&self, customer: &CustomerId, wrapped: &WrappedDataKey) -> Result<bool, Error> {
        let mut t = self.enter("create_match_key")?;
        if t.people.match_keys.contains_key(customer) {
            return Ok(false);
        }
        t.people.match_keys.insert(customer.clone(), wrapped.clone());
        Ok(true)
    }

    async fn take_index(
        &self,
        customer: &CustomerId,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, Error> {
        let mut t = self.enter("take_index")?;
        match t.people.leases.get(customer) {
            Some((h, u)) if h != holder && *u > now => Ok(false),
            _ => {
                t.people.leases.insert(customer.clone(), (holder.to_owned(), until));
                Ok(true)
            }
        }
    }

    async fn release_index(&self, customer: &CustomerId, holder: &str) -> Result<(), Error> {
        let mut t = self.enter("release_index")?;
        if t.people.leases.get(customer).is_some_and(|(h, _)| h == holder) {
            t.people.leases.remove(customer);
        }
        Ok(())
    }

    async fn index_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<u64, Error> {
        let t = self.enter("index_cursor")?;
        Ok(t.people.cursors.get(&(customer.clone(), connection.clone())).copied().unwrap_or(0))
    }

    async fn source_links(&self, customer: &CustomerId, sources: &[SourceRef]) -> Result<Vec<SourceLink>, Error> {
        let t = self.enter("source_links")?;
        Ok(sources.iter().filter_map(|s| t.people.sources.get(&(customer.clone(), s.clone())).cloned()).collect())
    }

    async fn key_holders(&self, customer: &CustomerId, keys: &[MatchKey]) -> Result<Vec<KeyHolders>, Error> {
        let t = self.enter("key_holders")?;
        Ok(keys.iter().filter_map(|k| t.people.keys.get(&(customer.clone(), k.clone())).cloned()).collect())
    }

    async fn persons(&self, customer: &CustomerId, ids: &[PersonId]) -> Result<Vec<Person>, Error> {
        let t = self.enter("persons")?;
        Ok(ids.iter().filter_map(|p| t.people.persons.get(&(customer.clone(), p.clone())).cloned()).collect())
    }

    async fn write_index(&self, customer: &CustomerId, w: &IndexWrites) -> Result<(), Error> {
        // One fault point per write, as a batch write failing half-way would (the order is the
        // adapter's: keys, persons, sources, persons removed, cursor).
        let c = customer.clone();
        {
            let mut t = self.enter("write_index")?;
            for k in &w.keys {
                t.people.keys.insert((c.clone(), k.key.clone()), k.clone());
            }
            for k in &w.keys_removed {
                t.people.keys.remove(&(c.clone(), k.clone()));
            }
        }
        let mut t = self.enter("write_index_persons")?;
        for p in &w.persons {
            t.people.persons.insert((c.clone(), p.person_id.clone()), p.clone());
        }
        for s in &w.sources {
            t.people.sources.insert((c.clone(), s.source.clone()), s.clone());
        }
        for s in &w.sources_removed {
            t.people.sources.remove(&(c.clone(), s.clone()));
        }
        for p in &w.persons_removed {
            t.people.persons.remove(&(c.clone(), p.clone()));
        }
        if let Some((connection, seq)) = &w.cursor {
            t.people.cursors.insert((c, connection.clone()), *seq);
        }
        Ok(())
    }

    async fn persons_page(
        &self,
        customer: &CustomerId,
        after: Option<&PersonId>,
        limit: usize,
    ) -> Result<Vec<Person>, Error> {
        let t = self.enter("persons_page")?;
        Ok(t.people
            .persons
            .iter()
            .filter(|((c, id), _)| c == customer && after.is_none_or(|a| id > a))
            .take(limit)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn connection_links(
        &self,
        customer: &CustomerId,
        connection: &ConnectionId,
        after: Option<&SourceRef>,
        limit: usize,
    ) -> Result<Vec<SourceLink>, Error> {
        let t = self.enter("connection_links")?;
        Ok(t.people
            .sources
            .iter()
            .filter(|((c, s), _)| c == customer && &s.connection_id == connection && after.is_none_or(|a| s > a))
            .take(limit)
            .map(|(_, l)| l.clone())
            .collect())
    }

    async fn drop_cursor(&self, customer: &CustomerId, connection: &ConnectionId) -> Result<(), Error> {
        let mut t = self.enter("drop_cursor")?;
        t.people.cursors.remove(&(customer.clone(), connection.clone()));
        Ok(())
    }
}
