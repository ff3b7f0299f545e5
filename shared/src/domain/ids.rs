//! Identifiers: every id that crosses a boundary gets its own type.
//!
//! Identifiers are parsed once, at the edge, and carry their invariants (length, alphabet) from
//! then on, so a `ConnectionId` can be put into a DynamoDB key or a KMS encryption context
//! without re-checking it, and a state id cannot be passed where an event id is expected.
//!
//! Two alphabets: Perch's own keys and the ids it files data under (`check_key`: no `#`,
//! which separates a DynamoDB key's prefix, no space, nothing a URL or a log line would need to
//! escape), and ids that Finch mints and Perch only echoes (`check_opaque`: any printable
//! ASCII), where refusing a character Finch may use tomorrow would refuse Finch's answer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidId {
    pub field: &'static str,
    pub reason: &'static str,
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId { field, reason: "must not be empty" });
    }
    if value.len() > max {
        return Err(InvalidId { field, reason: "is too long" });
    }
    Ok(())
}

/// Ids Perch keys items by: `[A-Za-z0-9-_.:@|]`, at most `max` bytes.
fn check_key(field: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    check_length(field, value, max)?;
    let ok = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'|'));
    if !ok {
        return Err(InvalidId { field, reason: "contains characters outside [A-Za-z0-9-_.:@|]" });
    }
    Ok(())
}

/// Ids Finch mints and Perch echoes: printable ASCII without spaces, at most `max` bytes.
fn check_opaque(field: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    check_length(field, value, max)?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidId { field, reason: "is not printable ASCII" });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an untrusted value.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                $check($field, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// Perch's tenant: the app's customer, taken from a JWT claim and nothing else.
    CustomerId,
    "customer",
    check_key,
    128
);
id_type!(
    /// Finch's id for one employer/provider pair; stable across reauthentication.
    ConnectionId,
    "connection_id",
    check_key,
    128
);
id_type!(
    /// The `customer_id` Perch sends to Finch: the tenant's id, plus `-N` for additional slots.
    FinchCustomerId,
    "finch_customer_id",
    check_key,
    255
);
id_type!(
    /// Finch's id of one entity of a connection (a UUID in Finch's spec): a map key of the
    /// stored connection and a path segment of `DELETE /connections/{id}/entities/{entity_id}`.
    EntityId,
    "entity_id",
    check_key,
    128
);
id_type!(
    /// A Finch Connect session id.
    SessionId,
    "session_id",
    check_opaque,
    256
);
id_type!(
    /// The stored half of a Connect `state`: 128 random bits, base64url (see
    /// [`crate::crypto::state`]). It names a live flow, so it is never logged.
    StateId,
    "state_id",
    check_key,
    64
);
id_type!(
    /// A keyed hash of an authorization code (see [`crate::crypto::code_hash`]): what the
    /// single-use marker of a code exchange is keyed by, never the code itself.
    CodeHash,
    "code_hash",
    check_key,
    128
);
id_type!(
    /// Perch's id of one person across a customer's connections (a random UUID v4): what the
    /// app files a person under, whatever connections they appear in.
    PersonId,
    "person_id",
    check_key,
    64
);
id_type!(
    /// A Finch webhook event id (`finch-event-id`), the key of webhook de-duplication.
    EventId,
    "finch-event-id",
    check_opaque,
    256
);

impl FinchCustomerId {
    /// The Finch `customer_id` for a tenant's slot: `acme`, `acme-2`, `acme-3`, …
    pub fn for_slot(customer: &CustomerId, slot: u32) -> Self {
        if slot <= 1 { Self(customer.as_str().to_owned()) } else { Self(format!("{}-{slot}", customer.as_str())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert!(CustomerId::parse("acme").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("a".repeat(129)).is_err());
        assert!(CustomerId::parse("acme#1").is_err());
        assert!(CustomerId::parse("ac me").is_err());
        assert!(CustomerId::parse("acmé").is_err());
    }

    #[test]
    fn finch_minted_ids_take_any_printable_ascii() {
        assert!(EventId::parse("msg_2Lh9KRb0pzN4LePd3XiA4v12Axj").is_ok());
        assert!(EventId::parse("evt#1/2").is_ok());
        assert!(EventId::parse("has space").is_err());
        assert!(EventId::parse("x".repeat(257)).is_err());
        assert!(SessionId::parse("").is_err());
    }

    #[test]
    fn finch_customer_id_suffixes_only_additional_slots() {
        let c = CustomerId::parse("acme").unwrap();
        assert_eq!(FinchCustomerId::for_slot(&c, 1).as_str(), "acme");
        assert_eq!(FinchCustomerId::for_slot(&c, 2).as_str(), "acme-2");
    }
}
