//! Secrets that cross a boundary: each in a type that cannot be printed.
//!
//! [`AccessToken`] and [`AuthorizationCode`] wrap [`secrecy::SecretString`]: their `Debug`
//! prints `[REDACTED]`, they have no `Display` and no `Serialize`, and the only way to the
//! plaintext is an explicit `expose_secret()` at the one place that needs it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::Error;

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

impl AuthorizationCode {
    /// Checks an untrusted code's shape before it goes anywhere; the error never quotes it.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > 512 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("code_invalid", "The authorization code is missing or malformed."));
        }
        Ok(Self::new(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let t = AccessToken::new("tok-123-secret");
        let c = AuthorizationCode::new("code-xyz");
        assert_eq!(format!("{t:?}"), "AccessToken([REDACTED])");
        assert!(!format!("{c:?}").contains("code-xyz"));
    }

    #[test]
    fn codes_are_shape_checked() {
        assert!(AuthorizationCode::parse("abc-123").is_ok());
        assert!(AuthorizationCode::parse("").is_err());
        assert!(AuthorizationCode::parse("has space").is_err());
        assert!(AuthorizationCode::parse(&"x".repeat(513)).is_err());
        let e = AuthorizationCode::parse("bad code").unwrap_err();
        assert!(!e.chain().contains("bad code"));
    }
}
