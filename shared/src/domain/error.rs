//! One error model for all of Perch. It knows no HTTP: the edge ([`crate::http`]) maps each
//! variant to a status and a problem body.
//!
//! Every failure carries two messages (dropshot's split): the *external* one, safe to show to
//! whoever called us — a stable `code` and a sentence — and the *internal* one, the full cause
//! chain, which goes to the log and nowhere else. Neither ever contains a token, a code or a
//! client secret: those live in types that cannot be formatted (see [`super::secret`]).
//!
//! Finch failures keep Finch's own split (oauth2-rs): Finch said no ([`FinchError`] with the
//! status, the parsed body and the `Finch-Request-Id`), the request never completed
//! (transport), or Finch answered something we could not parse.

use std::fmt;

/// A boxed cause, kept for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every way a Perch operation can fail.
#[derive(thiserror::Error)]
pub enum Error {
    /// The request is malformed or refers to something that cannot be used (400).
    #[error("invalid request ({code}): {detail}")]
    Invalid { code: &'static str, detail: String },

    /// No usable identity in the JWT claims (401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),

    /// The thing does not exist *for this caller*: a foreign id looks exactly like a missing one.
    #[error("not found: {0}")]
    NotFound(&'static str),

    /// The request conflicts with what is stored (409).
    #[error("conflict ({code}): {detail}")]
    Conflict { code: &'static str, detail: String },

    /// The body is over the limit (413).
    #[error("request body over {limit} bytes")]
    PayloadTooLarge { limit: usize },

    /// Finch answered with an error status (boxed: it is the largest variant).
    #[error(transparent)]
    Finch(Box<FinchError>),

    /// Finch could not be reached or did not answer in time.
    #[error("Finch {operation} did not complete")]
    FinchTransport {
        operation: &'static str,
        /// Whether the request may have reached Finch (matters for the code exchange).
        maybe_sent: bool,
        timed_out: bool,
        #[source]
        source: BoxError,
    },

    /// An AWS dependency failed (KMS, DynamoDB, Secrets Manager).
    #[error("{service} {operation} failed")]
    Aws {
        service: &'static str,
        operation: &'static str,
        /// Throttling or a 5xx: worth retrying later.
        retryable: bool,
        #[source]
        source: BoxError,
    },

    /// Perch's deployment is wrong in a way only an operator can fix (Finch refuses its client
    /// credentials or its redirect URI): never the caller's fault, and logged at ERROR with
    /// Finch's request id so the alarm on it fires.
    #[error("configuration error: {0}")]
    Configuration(String),

    /// A stored token that can never be decrypted again (its ciphertext was corrupted, or moved
    /// to another connection's record): retrying cannot help.
    #[error("stored token cannot be decrypted")]
    TokenUnreadable(#[source] BoxError),

    /// A bug or an impossible state; details only in the log.
    #[error("internal error: {0}")]
    Internal(String, #[source] Option<BoxError>),
}

impl Error {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid { code, detail: detail.into() }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict { code, detail: detail.into() }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into(), None)
    }

    pub fn internal_from(msg: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal(msg.into(), Some(source.into()))
    }

    pub fn aws<E>(service: &'static str, operation: &'static str, retryable: bool, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::Aws { service, operation, retryable, source: Box::new(source) }
    }

    /// The internal message: this error and every cause below it, for the log.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(cause) = cur {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            cur = cause.source();
        }
        out
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain())
    }
}

impl From<FinchError> for Error {
    fn from(e: FinchError) -> Self {
        Self::Finch(Box::new(e))
    }
}

impl From<super::ids::InvalidId> for Error {
    fn from(e: super::ids::InvalidId) -> Self {
        Self::invalid("invalid_id", e.to_string())
    }
}

/// Finch answered with a non-success status. The body is kept parsed (its `message` is
/// Finch's text about *our* request and never holds a secret) together with the request id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Finch {operation} answered {status} ({name}/{finch_code}), Finch-Request-Id {request_id}: {message}",
        name = name.as_deref().unwrap_or("-"), finch_code = finch_code.as_deref().unwrap_or("-"),
        request_id = request_id.as_deref().unwrap_or("-"), message = message.as_deref().unwrap_or("-"))]
pub struct FinchError {
    pub operation: &'static str,
    pub status: u16,
    pub name: Option<String>,
    pub finch_code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    /// `context.connection_id` of a `connection_already_exists` answer.
    pub context_connection_id: Option<String>,
    /// The wait Finch asked for (`retry-after-ms` / `retry-after`), if any.
    pub retry_after: Option<std::time::Duration>,
}

impl FinchError {
    pub fn is_finch_code(&self, code: &str) -> bool {
        self.finch_code.as_deref() == Some(code)
    }

    /// Worth another attempt later: 408, 409, 429 and 5xx (Finch's SDK rule).
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 408 | 409 | 429) || self.status >= 500
    }

    /// 401 `reauthenticate_user`: the employer must log in again.
    pub fn needs_reauth(&self) -> bool {
        self.status == 401 && self.is_finch_code("reauthenticate_user")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_keeps_every_cause_for_the_log() {
        let e = Error::internal_from("writing connection c-1", std::io::Error::other("disk on fire"));
        assert_eq!(e.chain(), "internal error: writing connection c-1: disk on fire");
        assert_eq!(format!("{e:?}"), e.chain());
    }

    #[test]
    fn finch_errors_keep_the_request_id_and_classify_retries() {
        let e = FinchError {
            operation: "introspect",
            status: 429,
            name: Some("rate_limit_exceeded_error".into()),
            finch_code: Some("finch_api_ip_rl".into()),
            message: None,
            request_id: Some("req-1".into()),
            context_connection_id: None,
            retry_after: None,
        };
        assert!(e.is_retryable() && !e.needs_reauth());
        assert!(Error::from(e).chain().contains("req-1"));
    }
}
