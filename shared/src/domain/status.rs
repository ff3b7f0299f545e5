//! Connection statuses: Finch's, and Perch's own state of a connection around them.
//!
//! [`ConnectionStatus`] is Finch's `ConnectionStatus` enum, parsed open so that a value Finch
//! adds tomorrow is kept instead of failing a whole response. [`ConnectionState`] is what Perch
//! stores: Finch's status, or `disconnecting` — Perch's own step between deciding to disconnect
//! and Finch confirming it, which Finch never reports and which no Finch status may overwrite.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Finch `ConnectionStatus` (plus `disconnected`, which Finch reports per entity and for a
/// revoked token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    Pending,
    Processing,
    Connected,
    ErrorNoAccountSetup,
    ErrorPermissions,
    Reauth,
    Disconnected,
    /// A status Finch added after this code was written, kept verbatim.
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

/// The state Perch keeps for a connection: the status Finch last reported, or Perch's own
/// `disconnecting`. Serialized as one string (`"connected"`, `"disconnecting"`, …), the
/// `status` of the API and of the stored item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Finch(ConnectionStatus),
    /// Perch has started a disconnect: Finch's `/disconnect` has not yet confirmed it.
    Disconnecting,
}

impl ConnectionState {
    /// The wire name of Perch's own state.
    pub const DISCONNECTING: &'static str = "disconnecting";

    pub fn as_str(&self) -> &str {
        match self {
            Self::Finch(s) => s.as_str(),
            Self::Disconnecting => Self::DISCONNECTING,
        }
    }

    /// Finch's status, unless Perch is disconnecting the connection.
    pub fn finch(&self) -> Option<&ConnectionStatus> {
        match self {
            Self::Finch(s) => Some(s),
            Self::Disconnecting => None,
        }
    }

    /// Reads a stored value: Perch's own name first, then Finch's open enum.
    pub fn parse(s: &str) -> Self {
        if s == Self::DISCONNECTING { Self::Disconnecting } else { Self::Finch(ConnectionStatus::from(s)) }
    }
}

impl From<ConnectionStatus> for ConnectionState {
    fn from(s: ConnectionStatus) -> Self {
        Self::Finch(s)
    }
}

impl PartialEq<ConnectionStatus> for ConnectionState {
    fn eq(&self, other: &ConnectionStatus) -> bool {
        self.finch() == Some(other)
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ConnectionState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_an_open_enum() {
        let s: ConnectionStatus = serde_json::from_str("\"reauth\"").unwrap();
        assert_eq!(s, ConnectionStatus::Reauth);
        assert_eq!(ConnectionStatus::from("error_reauth"), ConnectionStatus::Reauth);
        let s: ConnectionStatus = serde_json::from_str("\"brand_new\"").unwrap();
        assert_eq!(s, ConnectionStatus::Other("brand_new".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"brand_new\"");
    }

    #[test]
    fn disconnecting_is_perchs_own_state_not_a_finch_status() {
        assert_eq!(ConnectionState::parse("disconnecting"), ConnectionState::Disconnecting);
        assert_eq!(ConnectionState::parse("reauth"), ConnectionState::Finch(ConnectionStatus::Reauth));
        assert_eq!(ConnectionState::Disconnecting.finch(), None);
        assert_eq!(serde_json::to_string(&ConnectionState::Disconnecting).unwrap(), "\"disconnecting\"");
        assert_eq!(ConnectionState::from(ConnectionStatus::Connected), ConnectionStatus::Connected);
    }
}
