//! Protocol newtypes: every identifier and secret that crosses a boundary gets its own type.
//!
//! Identifiers are parsed once, at the edge, and carry their invariants (length, alphabet) from
//! then on, so a `ConnectionId` can be put into a DynamoDB key or a KMS encryption context
//! without re-checking it. Secrets ([`AccessToken`], [`AuthorizationCode`]) wrap
//! [`secrecy::SecretString`]: their `Debug` prints `[REDACTED]`, they have no `Display`, and the
//! only way to the plaintext is an explicit `expose_secret()` at the one place that needs it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidId {
    pub field: &'static str,
    pub reason: &'static str,
}

/// Identifiers we accept from outside: printable ASCII without spaces or the characters that
/// would need escaping in a DynamoDB key prefix (`#`), a URL or a log line.
fn check_id(field: &'static str, value: &str, max: usize) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId { field, reason: "must not be empty" });
    }
    if value.len() > max {
        return Err(InvalidId { field, reason: "is too long" });
    }
    let ok = value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'|'));
    if !ok {
        return Err(InvalidId { field, reason: "contains characters outside [A-Za-z0-9-_.:@|]" });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an untrusted value.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check_id($field, &value, $max)?;
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
    128
);
id_type!(
    /// Finch's id for one employer/provider pair; stable across reauthentication.
    ConnectionId,
    "connection_id",
    128
);
id_type!(
    /// The `customer_id` Perch sends to Finch: the tenant's id, plus `-N` for additional slots.
    FinchCustomerId,
    "finch_customer_id",
    255
);
id_type!(
    /// A Finch Connect session id.
    SessionId,
    "session_id",
    128
);

impl FinchCustomerId {
    /// The Finch `customer_id` for a tenant's slot: `acme`, `acme-2`, `acme-3`, …
    pub fn for_slot(customer: &CustomerId, slot: u32) -> Self {
        if slot <= 1 { Self(customer.as_str().to_owned()) } else { Self(format!("{}-{slot}", customer.as_str())) }
    }
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// # Security
            /// The plaintext: pass it straight to the one call that needs it, never to a log,
            /// an error message or a response.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}([REDACTED])", stringify!($name))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::new)
            }
        }
    };
}

secret_type!(
    /// A long-lived Finch access token: the key to an employer's payroll data.
    AccessToken
);
secret_type!(
    /// A short-lived (10 minutes) Finch authorization code from Connect.
    AuthorizationCode
);

/// Finch `ConnectProducts` (SPEC enum). Unknown products are refused before Finch is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    Benefits,
    Company,
    Deduction,
    Directory,
    Documents,
    Employment,
    Individual,
    Payment,
    PayStatement,
    Plans,
    PlansDependents,
    PlansEnrollments,
    Recordkeeping,
    Ssn,
}

/// `sandbox` of a Connect session: Finch's generated data, or a provider's demo account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    Finch,
    Provider,
}

/// `integration.auth_method` of a Connect session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Assisted,
    Credential,
    Oauth,
    ApiToken,
}

/// Finch `ConnectionStatus`, parsed as an open enum: a value Finch adds tomorrow is kept
/// verbatim instead of failing the whole response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    Pending,
    Processing,
    Connected,
    ErrorNoAccountSetup,
    ErrorPermissions,
    Reauth,
    Disconnected,
    Other(String),
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Connected => "connected",
            Self::ErrorNoAccountSetup => "error_no_account_setup",
            Self::ErrorPermissions => "error_permissions",
            Self::Reauth => "reauth",
            Self::Disconnected => "disconnected",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for ConnectionStatus {
    fn from(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "connected" => Self::Connected,
            "error_no_account_setup" => Self::ErrorNoAccountSetup,
            "error_permissions" => Self::ErrorPermissions,
            // Finch's docs also spell it `error_reauth`; the SPEC value is `reauth`.
            "reauth" | "error_reauth" => Self::Reauth,
            "disconnected" => Self::Disconnected,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Serialize for ConnectionStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConnectionStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from(String::deserialize(d)?.as_str()))
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
    fn finch_customer_id_suffixes_only_additional_slots() {
        let c = CustomerId::parse("acme").unwrap();
        assert_eq!(FinchCustomerId::for_slot(&c, 1).as_str(), "acme");
        assert_eq!(FinchCustomerId::for_slot(&c, 2).as_str(), "acme-2");
    }

    #[test]
    fn secrets_do_not_print() {
        let t = AccessToken::new("tok-123-secret");
        let c = AuthorizationCode::new("code-xyz");
        assert_eq!(format!("{t:?}"), "AccessToken([REDACTED])");
        assert!(!format!("{c:?}").contains("code-xyz"));
    }

    #[test]
    fn status_is_an_open_enum() {
        let s: ConnectionStatus = serde_json::from_str("\"reauth\"").unwrap();
        assert_eq!(s, ConnectionStatus::Reauth);
        let s: ConnectionStatus = serde_json::from_str("\"brand_new\"").unwrap();
        assert_eq!(s, ConnectionStatus::Other("brand_new".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"brand_new\"");
    }

    #[test]
    fn products_follow_the_finch_enum() {
        let p: Vec<Product> = serde_json::from_str(r#"["pay_statement","ssn"]"#).unwrap();
        assert_eq!(p, vec![Product::PayStatement, Product::Ssn]);
        assert!(serde_json::from_str::<Product>("\"payroll\"").is_err());
    }
}
