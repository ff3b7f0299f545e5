//! Finch's OpenAPI document (`spec/openapi.json`, a copy of `../shared/finch/openapi.json` that
//! a test keeps identical) as the emulator's referee.

use std::sync::OnceLock;

pub use openapi_referee::{Operation, Spec};

/// The vendored Finch OpenAPI document.
pub const OPENAPI_JSON: &str = include_str!("../spec/openapi.json");

/// The process-wide referee (parsing 330 kB once is enough).
///
/// The document is compiled in and parsed by this module's tests: if it ever failed to parse,
/// an emulator without its referee would check nothing, so it stops instead of serving.
#[allow(clippy::expect_used)]
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::from_json(OPENAPI_JSON).expect("the vendored Finch OpenAPI document parses"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_operations_and_their_security() {
        let s = spec();
        let op = s.operation("POST", "/connect/sessions").unwrap();
        assert_eq!(op.security, vec!["basicAuth"]);
        assert!(op.requires_version_header && op.has_json_body);
        let op = s.operation("POST", "/auth/token").unwrap();
        assert!(op.security.is_empty());
        assert!(s.operation("GET", "/nope").is_none());
    }

    #[test]
    fn validates_bodies_with_nullable_fields() {
        let s = spec();
        let op = s.operation("POST", "/connect/sessions").unwrap();
        let good = json!({"customer_id": "acme", "customer_name": "Acme", "products": ["company"], "sandbox": null, "customer_email": null});
        assert_eq!(s.check_request_body(&op, &good), Vec::<String>::new());
        let bad = json!({"customer_id": "", "customer_name": "Acme", "products": ["payroll"]});
        assert_eq!(s.check_request_body(&op, &bad).len(), 2);
        let op = s.operation("POST", "/auth/token").unwrap();
        assert!(!s.check_request_body(&op, &json!({"code": "c", "client_id": "not-a-uuid"})).is_empty());
    }
}
