//! [`Problem`]: the external half of an [`Error`], with its HTTP status.

use serde::Serialize;

use crate::domain::{Error, FinchError};

/// How long a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: u32 = 5;

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:perch:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The stable machine-readable code (also the last segment of `type`).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds the client should wait before trying again (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: u16, code: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            type_uri: format!("urn:perch:problem:{code}"),
            title,
            status,
            detail,
            code,
            request_id: None,
            retry_after: None,
        }
    }

    /// The same problem, asking the client to come back later.
    fn retry_later(mut self) -> Self {
        self.retry_after = Some(RETRY_AFTER_SECS);
        self
    }
}

impl From<&Error> for Problem {
    /// The status and the caller-facing half of an error: never its cause.
    fn from(e: &Error) -> Self {
        match e {
            Error::Invalid { code, detail } => Problem::new(400, code, "Invalid request", detail.clone()),
            Error::Unauthenticated(detail) => {
                Problem::new(401, "unauthenticated", "Unauthenticated", (*detail).to_owned())
            }
            Error::NotFound(what) => Problem::new(404, "not_found", "Not found", format!("No such {what}.")),
            Error::Conflict { code, detail } => Problem::new(409, code, "Conflict", detail.clone()),
            Error::PayloadTooLarge { limit } => Problem::new(
                413,
                "payload_too_large",
                "Payload too large",
                format!("The request body must be at most {limit} bytes."),
            ),
            Error::Finch(f) => finch(f),
            Error::FinchTransport { timed_out: true, .. } => Problem::new(
                504,
                "finch_timeout",
                "Finch did not answer in time",
                "Finch did not answer in time; try again.".into(),
            ),
            Error::FinchTransport { .. } => Problem::new(
                502,
                "finch_unreachable",
                "Finch unreachable",
                "Finch could not be reached; try again.".into(),
            ),
            Error::Aws { retryable: true, .. } => Problem::new(
                503,
                "service_unavailable",
                "Service unavailable",
                "A storage or key service is busy; try again.".into(),
            )
            .retry_later(),
            Error::Configuration(_) => Problem::new(
                500,
                "configuration_error",
                "Configuration error",
                "Perch is not configured correctly for Finch; its operators have been alerted.".into(),
            ),
            Error::Aws { .. } | Error::TokenUnreadable(_) | Error::Internal(..) => Problem::new(
                500,
                "internal",
                "Internal error",
                "Something went wrong on our side; it has been logged.".into(),
            ),
        }
    }
}

/// Finch said no: its rate limit is ours to wait out, its failures and refusals are a bad
/// gateway (the caller's request was fine; ours to Finch was not taken).
fn finch(f: &FinchError) -> Problem {
    match f.status {
        429 => Problem::new(
            503,
            "finch_rate_limited",
            "Finch is rate limiting",
            "Finch is rate limiting requests; try again shortly.".into(),
        )
        .retry_later(),
        s if s >= 500 => {
            Problem::new(502, "finch_unavailable", "Finch unavailable", "Finch failed to answer; try again.".into())
        }
        _ => Problem::new(
            502,
            "finch_rejected",
            "Finch rejected the request",
            "Finch rejected a request Perch made; it has been logged.".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finch_error(status: u16) -> Error {
        Error::from(FinchError {
            operation: "introspect",
            status,
            name: None,
            finch_code: None,
            message: None,
            request_id: Some("req-1".into()),
            context_connection_id: None,
            retry_after: None,
        })
    }

    #[test]
    fn internal_details_stay_out_of_the_problem() {
        let e = Error::internal_from("writing connection c-1", std::io::Error::other("disk on fire"));
        let p = Problem::from(&e);
        assert_eq!((p.status, p.code), (500, "internal"));
        assert!(!p.detail.contains("disk on fire") && !p.detail.contains("c-1"));
        assert!(e.chain().contains("disk on fire"));
    }

    #[test]
    fn every_variant_has_its_status_and_only_busy_ones_ask_to_retry() {
        let busy = Error::Aws { service: "kms", operation: "Decrypt", retryable: true, source: "x".into() };
        let broken = Error::Aws { service: "kms", operation: "Decrypt", retryable: false, source: "x".into() };
        let transport = |timed_out| Error::FinchTransport {
            operation: "introspect",
            maybe_sent: true,
            timed_out,
            source: "x".into(),
        };
        for (e, status, code, retry) in [
            (Error::invalid("code_invalid", "x"), 400, "code_invalid", None),
            (Error::Unauthenticated("x"), 401, "unauthenticated", None),
            (Error::NotFound("connection"), 404, "not_found", None),
            (Error::conflict("connection_busy", "x"), 409, "connection_busy", None),
            (Error::PayloadTooLarge { limit: 1 }, 413, "payload_too_large", None),
            (finch_error(429), 503, "finch_rate_limited", Some(5)),
            (finch_error(502), 502, "finch_unavailable", None),
            (finch_error(400), 502, "finch_rejected", None),
            (transport(true), 504, "finch_timeout", None),
            (transport(false), 502, "finch_unreachable", None),
            (busy, 503, "service_unavailable", Some(5)),
            (Error::Configuration("x".into()), 500, "configuration_error", None),
            (broken, 500, "internal", None),
        ] {
            let p = Problem::from(&e);
            assert_eq!((p.status, p.code, p.retry_after), (status, code, retry), "{e:?}");
            assert_eq!(p.type_uri, format!("urn:perch:problem:{code}"));
        }
    }
}
