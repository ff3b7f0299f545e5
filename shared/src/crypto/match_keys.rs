//! Match keys as keyed hashes: what the person index compares instead of SSNs, names, dates of
//! birth and e-mail addresses (see [`crate::domain::people`]).
//!
//! Each key is `HMAC-SHA256(k_c, rule ‖ normalised value)` under `k_c`, a 256-bit key of the
//! customer's own: made by KMS (`GenerateDataKey` under Perch's key, encryption context
//! [`context`]: purpose and customer), stored only wrapped in the customer's index partition,
//! unwrapped by the indexer ([`MatchKeyring`]). A table dump without KMS confirms no guessed
//! SSN or birthday — nine digits are otherwise a short brute force —, the same person has
//! unrelated keys under two customers, so no key links tenants, and deleting the wrapped key
//! makes every key of the customer's index meaningless at once.
//!
//! **Normalisation** is what makes two providers' spellings one key: names lower-cased with
//! everything but letters and digits dropped (`O'Brien`, `o brien` and `OBRIEN` agree), the
//! date of birth as `YYYY-MM-DD` (refused if it is not a date), SSNs as nine digits (refused if
//! all zeros or not nine), the work e-mail trimmed and lower-cased; then, as keys that link no
//! one but tell two look-alikes apart, the work e-mail's domain (after the `@`), the personal
//! e-mail and its domain. A missing or unreadable value gives no key, never a key of an empty
//! string.

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use serde_json::Value;
use sha2::Sha256;

use super::records::WrappedDataKey;
use crate::domain::people::{MatchKey, MatchRule};
use crate::domain::{CustomerId, Error};

/// The encryption context of a customer's match key (its own purpose: no data key or token
/// ciphertext can stand in for it).
pub fn context(customer: &CustomerId) -> [(&'static str, String); 3] {
    [
        ("purpose", "perch-match-keys".to_owned()),
        ("customer_id", customer.as_str().to_owned()),
        ("version", "1".to_owned()),
    ]
}

/// Customers' match keys: KMS deployed, a local cipher in tests.
#[async_trait]
pub trait MatchKeyring: Send + Sync {
    /// A new match key for `customer`, and its wrapped copy to store.
    async fn generate_match_key(&self, customer: &CustomerId) -> Result<(CustomerMatchKeys, WrappedDataKey), Error>;

    /// A stored match key; fails if it was made for another customer.
    async fn unwrap_match_key(
        &self,
        wrapped: &WrappedDataKey,
        customer: &CustomerId,
    ) -> Result<CustomerMatchKeys, Error>;
}

/// One customer's match-key hasher.
pub struct CustomerMatchKeys {
    key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for CustomerMatchKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerMatchKeys(redacted)")
    }
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, Error> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Error::internal("match key rejected by HMAC"))
}

impl CustomerMatchKeys {
    /// The hasher of a 256-bit key (KMS's plaintext, zeroed by the caller).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::internal("a match key is not 256 bits"))?;
        Ok(Self { key: SecretBox::new(Box::new(key)) })
    }

    fn hash(&self, rule: MatchRule, value: &str) -> Result<MatchKey, Error> {
        let mut m = mac(self.key.expose_secret())?;
        m.update(rule.as_str().as_bytes());
        m.update(b"\n");
        m.update(value.as_bytes());
        let hash = m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        Ok(MatchKey { rule, hash })
    }

    /// The match keys of one individual (Finch's `/employer/individual` model), strongest first.
    pub fn keys_of(&self, individual: &Value) -> Result<Vec<MatchKey>, Error> {
        let mut keys = Vec::new();
        if let Some(ssn) = individual.get("ssn").and_then(Value::as_str).and_then(normalise_ssn) {
            keys.push(self.hash(MatchRule::Ssn, &ssn)?);
        }
        let name = |field: &str| individual.get(field).and_then(Value::as_str).map(normalise_name);
        if let (Some(first), Some(last), Some(dob)) = (
            name("first_name"),
            name("last_name"),
            individual.get("dob").and_then(Value::as_str).and_then(normalise_dob),
        ) && !first.is_empty()
            && !last.is_empty()
        {
            keys.push(self.hash(MatchRule::NameAndDob, &format!("{first}\n{last}\n{dob}"))?);
        }
        let (work, personal) = (email(individual, "work"), email(individual, "personal"));
        let domain = |e: &str| e.split_once('@').map_or("", |(_, d)| d).to_owned();
        if let Some(e) = &work {
            keys.push(self.hash(MatchRule::WorkEmail, e)?);
            keys.push(self.hash(MatchRule::WorkEmailDomain, &domain(e))?);
        }
        if let Some(e) = &personal {
            keys.push(self.hash(MatchRule::PersonalEmail, e)?);
            keys.push(self.hash(MatchRule::PersonalEmailDomain, &domain(e))?);
        }
        Ok(keys)
    }
}

/// Letters and digits only, lower-cased.
pub fn normalise_name(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn normalise_dob(s: &str) -> Option<String> {
    let d = time::Date::parse(s.trim(), &time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.to_string())
}

fn normalise_ssn(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    (digits.len() == 9 && digits != "000000000" && s.chars().all(|c| c.is_ascii_digit() || c == '-' || c == ' '))
        .then_some(digits)
}

/// The first e-mail of `kind` (`work`, `personal`), trimmed and lower-cased.
fn email(individual: &Value, kind: &str) -> Option<String> {
    individual.get("emails")?.as_array()?.iter().find_map(|e| {
        if e.get("type").and_then(Value::as_str) != Some(kind) {
            return None;
        }
        let v = e.get("data")?.as_str()?.trim().to_lowercase();
        let (local, domain) = v.split_once('@')?;
        (!local.is_empty() && domain.contains('.')).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys(customer: &str, v: Value) -> Vec<MatchKey> {
        let byte = customer.bytes().next().unwrap();
        CustomerMatchKeys::from_bytes(&[byte; 32]).unwrap().keys_of(&v).unwrap()
    }

    #[test]
    fn spellings_agree_and_missing_values_give_no_key() {
        let a = keys(
            "acme",
            json!({"first_name": "Seán", "last_name": "O'Brien", "dob": "1980-02-03", "ssn": "912-34-5678",
                   "emails": [{"data": "Sean.OBrien@Example.com ", "type": "work"}, {"data": " X@Y.z", "type": "personal"}]}),
        );
        let b = keys(
            "acme",
            json!({"first_name": "SEÁN", "last_name": "o brien", "dob": "1980-02-03", "ssn": "912345678",
                   "emails": [{"data": "sean.obrien@example.com", "type": "work"}, {"data": "x@y.z", "type": "personal"}]}),
        );
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|k| k.rule).collect::<Vec<_>>(), MatchRule::ALL);
        assert!(a.iter().all(|k| k.hash.len() == 64 && !k.hash.contains("912345678")));
        let colleague = keys("acme", json!({"emails": [{"data": "ann.lee@example.com", "type": "work"}]}));
        assert_eq!(colleague[1], a[3], "one domain, one key");
        assert_ne!(colleague[0], a[2]);
        // Missing, empty or unreadable: no key, never a key of nothing.
        let none = keys(
            "acme",
            json!({"first_name": "Ann", "last_name": "", "dob": "1980-02-30", "ssn": "000-00-0000",
                   "emails": [{"data": "ann@example.com", "type": "personal"}]}),
        );
        let rules: Vec<MatchRule> = none.iter().map(|k| k.rule).collect();
        assert_eq!(rules, [MatchRule::PersonalEmail, MatchRule::PersonalEmailDomain], "only keys that link no one");
        let no_dob = keys("acme", json!({"first_name": "Ann", "last_name": "Lee", "dob": null}));
        assert!(no_dob.is_empty(), "a name alone is never a key");
    }

    #[test]
    fn keys_are_per_key() {
        let v = json!({"first_name": "Ann", "last_name": "Lee", "dob": "1990-01-01"});
        assert_ne!(keys("acme", v.clone()), keys("globex", v.clone()));
        assert_eq!(keys("acme", v.clone()), keys("acme", v));
    }
}
