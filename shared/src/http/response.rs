//! Responses: problems, JSON, redirects; every one `no-store`, `no-referrer`, `nosniff`.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

use super::Problem;
use crate::domain::Error;

/// The problem an error answers with, its internal message logged (ERROR for a 5xx).
fn logged_problem(err: &Error, request_id: Option<String>) -> Problem {
    let mut problem = Problem::from(err);
    problem.request_id = request_id;
    if problem.status >= 500 {
        tracing::error!(status = problem.status, code = problem.code, error = %err.chain(), "request failed");
    } else {
        tracing::warn!(status = problem.status, code = problem.code, error = %err.chain(), "request refused");
    }
    problem
}

/// Logs the internal message and renders the external one.
pub fn error_response(err: &Error, request_id: Option<String>) -> Response<Body> {
    let problem = logged_problem(err, request_id);
    let body = match serde_json::to_vec(&problem) {
        Ok(b) => b,
        // Strings and numbers only: it cannot fail, but a body-less 500 is the honest answer
        // if it ever did.
        Err(e) => {
            tracing::error!(error = %e, "problem not serialisable");
            return base_response(500, Vec::new(), "application/problem+json");
        }
    };
    let mut resp = base_response(problem.status, body, "application/problem+json");
    if let Some(secs) = problem.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// A JSON success response.
pub fn json_response<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => base_response(status, body, "application/json"),
        Err(e) => error_response(&Error::internal_from("serialising a response", e), None),
    }
}

/// A 204 with no body.
pub fn no_content() -> Response<Body> {
    base_response(204, Vec::new(), "application/json")
}

/// What the employer can do after a redirect flow that failed, as the app is told (`next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Something was busy or failed on the way (Finch, storage): trying again shortly works,
    /// and whatever Finch already did is recovered.
    Retry,
    /// This Connect attempt is over (denied, expired, already used, not Perch's): start
    /// Connect again.
    Restart,
    /// Perch's deployment is wrong: nothing the employer does helps; the operators are alerted.
    ContactSupport,
}

impl NextStep {
    pub fn of(problem: &Problem) -> Self {
        match problem.code {
            "configuration_error" => Self::ContactSupport,
            // Another call is finishing this very exchange.
            "exchange_in_progress" => Self::Retry,
            _ if problem.status >= 500 => Self::Retry,
            _ => Self::Restart,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Restart => "restart",
            Self::ContactSupport => "contact_support",
        }
    }
}

/// A failed redirect flow, back in the app: a 302 to `app_url` with `outcome=error`, the
/// problem's stable `reason` code, the [`NextStep`] and the request id — never a code, a state
/// or an error's text. The internal message is logged as for any problem.
pub fn failure_redirect(app_url: &url::Url, err: &Error, request_id: Option<String>) -> Response<Body> {
    let problem = logged_problem(err, request_id);
    let mut url = app_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("outcome", "error").append_pair("reason", problem.code);
        q.append_pair("next", NextStep::of(&problem).as_str());
        if let Some(id) = &problem.request_id {
            q.append_pair("request_id", id);
        }
    }
    redirect_response(url.as_str())
}

/// A 302 to `location` (which must never carry a secret).
pub fn redirect_response(location: &str) -> Response<Body> {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut resp = base_response(302, Vec::new(), "text/plain");
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        // A URL Perch built from its configuration always is a valid header value.
        Err(e) => error_response(&Error::internal_from("redirect location is not a header value", e), None),
    }
}

fn base_response(status: u16, body: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(if body.is_empty() { Body::Empty } else { Body::Binary(body) });
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The callback URL carries a code and a state; no page we return may leak it onward.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answers_carry_retry_after_and_others_do_not() {
        let busy = Error::Aws { service: "dynamodb", operation: "PutItem", retryable: true, source: "x".into() };
        let r = error_response(&busy, Some("req-9".into()));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(r.body().as_ref()).unwrap();
        assert_eq!(body["request_id"], "req-9");
        assert!(body.get("retry_after").is_none(), "the wait travels as a header only");
        let r = error_response(&Error::NotFound("connection"), None);
        assert_eq!(r.status(), 404);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}
