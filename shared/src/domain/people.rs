//! People across a customer's connections: one [`Person`] per human, whatever connections and
//! entities they appear in (seed 004, "Repeating employees"; DATA.md §6).
//!
//! Finch's `individual_id` is no key across connections: ids differ across providers by
//! construction, and within one provider they can change with the authentication method. So a
//! person is found by **match keys**, strongest first ([`MatchRule`]): the SSN (when the `ssn`
//! product is granted), normalised first name + last name + date of birth (Finch's own
//! recommendation), the work e-mail. Never a name alone. Each key is kept only as a keyed hash
//! (see [`crate::crypto::match_keys`]), never as the value.
//!
//! **Precision first.** A wrong merge shows one person's pay as another's; a missed one only
//! shows a person twice. So: a link needs exactly one candidate; several candidates for a key
//! leave the person apart, and the ambiguity is reported ([`Ambiguity`]); two SSNs that differ
//! are never the same person whatever else they share; two work e-mails that differ at one
//! domain are two people, however alike their names and birthdays
//! ([`Person::email_conflicts`]); a link, once made, stays when a key changes (a name change, a
//! corrected date of birth), and is undone only when the SSNs disagree.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ConnectionId, EntityId, PersonId};

/// Which key linked a source to its person, strongest first; then the one key that never links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    Ssn,
    NameAndDob,
    WorkEmail,
    /// The rules below link no one and have no holders: they only tell apart two sources that
    /// look alike ([`Person::email_conflicts`]). The work e-mail's domain (it names thousands).
    WorkEmailDomain,
    /// The personal e-mail, and its domain: not a key (a family can share one; providers keep it
    /// less well), but another personal address at the same domain is one more sign of another
    /// person.
    PersonalEmail,
    PersonalEmailDomain,
}

impl MatchRule {
    /// The rules that link sources, strongest first.
    pub const LINKING: [MatchRule; 3] = [Self::Ssn, Self::NameAndDob, Self::WorkEmail];
    pub const ALL: [MatchRule; 6] = [
        Self::Ssn,
        Self::NameAndDob,
        Self::WorkEmail,
        Self::WorkEmailDomain,
        Self::PersonalEmail,
        Self::PersonalEmailDomain,
    ];
    /// Each e-mail rule, and the rule of its domain.
    const EMAILS: [(MatchRule, MatchRule); 2] =
        [(Self::WorkEmail, Self::WorkEmailDomain), (Self::PersonalEmail, Self::PersonalEmailDomain)];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssn => "ssn",
            Self::NameAndDob => "name_and_dob",
            Self::WorkEmail => "work_email",
            Self::WorkEmailDomain => "work_email_domain",
            Self::PersonalEmail => "personal_email",
            Self::PersonalEmailDomain => "personal_email_domain",
        }
    }

    /// Whether a key of this rule links sources (and so names its holders in the index).
    pub fn links(self) -> bool {
        Self::LINKING.contains(&self)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One match key of a source: its rule and the keyed hash of its value (hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MatchKey {
    pub rule: MatchRule,
    pub hash: String,
}

/// Where a person appears: one individual of one entity of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceRef {
    pub connection_id: ConnectionId,
    pub entity_id: EntityId,
    pub individual_id: String,
}

impl SourceRef {
    /// Whether `other` is in the same entity of the same connection (two individuals there
    /// are two people, whatever they share).
    pub fn same_entity(&self, other: &SourceRef) -> bool {
        self.connection_id == other.connection_id && self.entity_id == other.entity_id
    }
}

/// A source of a person, and how it was linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    #[serde(flatten)]
    pub source: SourceRef,
    /// The key that linked it to the person's other sources; `None` for the source the person
    /// was made from.
    pub rule: Option<MatchRule>,
    #[serde(with = "time::serde::rfc3339")]
    pub linked_at: OffsetDateTime,
}

/// A source that matched several people by one key, and was left apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ambiguity {
    pub rule: MatchRule,
    /// The people it could have been.
    pub candidates: Vec<PersonId>,
    #[serde(with = "time::serde::rfc3339")]
    pub found_at: OffsetDateTime,
}

/// One person of a customer (ids, rules and keyed hashes: no personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub person_id: PersonId,
    pub sources: Vec<Link>,
    /// Every match key of every source (one entry per source and key): when the last source
    /// with a key leaves, the key stops naming the person.
    pub keys: Vec<MatchKey>,
    /// When this person was left apart from others that share a key.
    #[serde(default)]
    pub ambiguities: Vec<Ambiguity>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Person {
    /// The keyed SSN hash of the person, if a source had one.
    pub fn ssn(&self) -> Option<&str> {
        self.keys.iter().find(|k| k.rule == MatchRule::Ssn).map(|k| k.hash.as_str())
    }

    /// Whether `ssn` (a source's keyed SSN hash) contradicts the person's.
    pub fn ssn_conflicts(&self, ssn: Option<&str>) -> bool {
        matches!((self.ssn(), ssn), (Some(a), Some(b)) if a != b)
    }

    fn has_key(&self, rule: MatchRule, hash: &str) -> bool {
        self.keys.iter().any(|k| k.rule == rule && k.hash == hash)
    }

    /// Whether a source with these keys is someone else by their e-mails: the person has a work
    /// (or personal) e-mail at the source's domain, and not the source's. One employer gives one
    /// person one address, so two providers of it show the same one (or one at another domain,
    /// which says nothing); two people with one name and birthday there have two. An alias at
    /// the same domain (`jo@` and `joanna@`) is a person seen twice — a missed link, never a
    /// wrong one.
    pub fn email_conflicts(&self, keys: &[MatchKey]) -> bool {
        let hash = |rule| keys.iter().find(|k: &&MatchKey| k.rule == rule).map(|k| k.hash.as_str());
        MatchRule::EMAILS.into_iter().any(|(address, domain)| match (hash(address), hash(domain)) {
            (Some(a), Some(d)) => self.has_key(domain, d) && !self.has_key(address, a),
            _ => false,
        })
    }

    /// Whether one of the person's sources is in the same entity as `source` (and is not it).
    pub fn has_sibling_of(&self, source: &SourceRef) -> bool {
        self.sources.iter().any(|l| l.source != *source && l.source.same_entity(source))
    }
}

/// A source's link in the index: its person and the keys it had when last indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLink {
    pub source: SourceRef,
    pub person: PersonId,
    pub keys: Vec<MatchKey>,
}

/// The people a match key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHolders {
    pub key: MatchKey,
    pub persons: Vec<PersonId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(c: &str, e: &str, i: &str) -> SourceRef {
        SourceRef {
            connection_id: ConnectionId::parse(c).unwrap(),
            entity_id: EntityId::parse(e).unwrap(),
            individual_id: i.into(),
        }
    }

    #[test]
    fn ssns_that_differ_conflict_and_siblings_are_found() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let p = Person {
            person_id: PersonId::parse("p-1").unwrap(),
            sources: vec![Link { source: src("c1", "e1", "i1"), rule: None, linked_at: now }],
            keys: vec![MatchKey { rule: MatchRule::Ssn, hash: "aa".into() }],
            ambiguities: vec![],
            created_at: now,
            updated_at: now,
        };
        assert!(p.ssn_conflicts(Some("bb")) && !p.ssn_conflicts(Some("aa")) && !p.ssn_conflicts(None));
        assert!(p.has_sibling_of(&src("c1", "e1", "i2")));
        assert!(!p.has_sibling_of(&src("c1", "e1", "i1")), "itself");
        assert!(!p.has_sibling_of(&src("c1", "e2", "i2")) && !p.has_sibling_of(&src("c2", "e1", "i2")));
        assert_eq!(MatchRule::parse("name_and_dob"), Some(MatchRule::NameAndDob));
        assert_eq!(MatchRule::parse("work_email_domain"), Some(MatchRule::WorkEmailDomain));
        assert!(MatchRule::LINKING.iter().all(|r| r.links()) && !MatchRule::WorkEmailDomain.links());
        assert_eq!(serde_json::to_string(&MatchRule::WorkEmail).unwrap(), "\"work_email\"");
    }

    #[test]
    fn another_work_email_at_the_same_domain_is_someone_else() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let key = |rule, hash: &str| MatchKey { rule, hash: hash.into() };
        let work = |a: &str, d: &str| vec![key(MatchRule::WorkEmail, a), key(MatchRule::WorkEmailDomain, d)];
        let personal =
            |a: &str, d: &str| vec![key(MatchRule::PersonalEmail, a), key(MatchRule::PersonalEmailDomain, d)];
        let p = Person {
            person_id: PersonId::parse("p-1").unwrap(),
            sources: vec![Link { source: src("c1", "e1", "i1"), rule: None, linked_at: now }],
            keys: [work("ann@d", "d"), personal("ann@m", "m")].concat(),
            ambiguities: vec![],
            created_at: now,
            updated_at: now,
        };
        assert!(p.email_conflicts(&work("bob@d", "d")), "another address there");
        assert!(p.email_conflicts(&[work("ann@other", "other"), personal("bob@m", "m")].concat()), "personal too");
        assert!(!p.email_conflicts(&[work("ann@d", "d"), personal("ann@m", "m")].concat()), "the same addresses");
        assert!(!p.email_conflicts(&work("ann@other", "other")), "another domain says nothing");
        assert!(!p.email_conflicts(&personal("bob@d", "d")), "a personal address is no work address");
        assert!(!p.email_conflicts(&[]), "no address says nothing");
    }
}
