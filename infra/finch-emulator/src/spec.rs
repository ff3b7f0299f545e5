//! Finch's OpenAPI document as a referee: every request the emulator receives and every
//! response it sends on a Finch route is checked against it.
//!
//! The document is Finch's own (`spec/openapi.json`, a copy of `../shared/finch/openapi.json`
//! that a test keeps identical). It is OpenAPI 3.1 but still uses 3.0's `nullable`, which JSON
//! Schema 2020-12 ignores; the loader rewrites `nullable: true` into a `null` type so that the
//! values Finch documents as nullable validate. Schemas are compiled lazily, one validator per
//! (operation, body) pair, each rooted at the whole document so `#/components/...` resolves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

/// The vendored Finch OpenAPI document.
pub const OPENAPI_JSON: &str = include_str!("../spec/openapi.json");

/// An operation of the document matched by method and concrete path.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    /// The templated path, e.g. `/employer/company`.
    pub path: String,
    pub security: Vec<String>,
    pub requires_version_header: bool,
    pub has_json_body: bool,
    pub body_required: bool,
}

/// The referee: the normalised document and a cache of compiled validators.
pub struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The process-wide spec (parsing 330 kB once is enough).
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap_or(Value::Null);
        normalise_nullable(&mut doc);
        Spec { doc, validators: Mutex::new(HashMap::new()) }
    })
}

fn normalise_nullable(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(normalise_nullable),
        Value::Object(map) => {
            map.values_mut().for_each(normalise_nullable);
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = t.clone();
                        map.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
                    }
                    Some(Value::Array(ts)) => {
                        if !ts.contains(&Value::String("null".into())) {
                            ts.push(Value::String("null".into()));
                        }
                    }
                    _ => {
                        let rest: Map<String, Value> = std::mem::take(map);
                        let only_docs = rest.keys().all(|k| k == "description" || k == "title");
                        if only_docs {
                            map.insert("type".into(), Value::String("null".into()));
                        } else {
                            map.insert(
                                "anyOf".into(),
                                Value::Array(vec![Value::Object(rest), serde_json::json!({"type": "null"})]),
                            );
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b)
}

impl Spec {
    /// The operation for a method and a concrete path, if the document has one.
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation> {
        let method = method.to_ascii_lowercase();
        let paths = self.doc.get("paths")?.as_object()?;
        // Prefer a literal match over a templated one (`/sandbox/connections/accounts`).
        let (template, item) = paths
            .iter()
            .find(|(t, _)| t.as_str() == path)
            .or_else(|| paths.iter().find(|(t, _)| template_matches(t, path)))?;
        let op = item.get(&method)?;
        let security = op
            .get("security")
            .or_else(|| self.doc.get("security"))
            .and_then(Value::as_array)
            .map(|reqs| reqs.iter().filter_map(Value::as_object).flat_map(|o| o.keys().cloned()).collect())
            .unwrap_or_default();
        let requires_version_header = op
            .get("parameters")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter().any(|p| p.get("$ref").and_then(Value::as_str) == Some("#/components/parameters/API-Version"))
            })
            .unwrap_or(false);
        let body = op.get("requestBody");
        Some(Operation {
            method,
            path: template.clone(),
            security,
            requires_version_header,
            has_json_body: body.and_then(|b| b.pointer("/content/application~1json/schema")).is_some(),
            body_required: body.and_then(|b| b.get("required")).and_then(Value::as_bool).unwrap_or(false),
        })
    }

    fn validator(&self, pointer: &str) -> Result<Option<Arc<jsonschema::Validator>>, String> {
        if self.doc.pointer(pointer).is_none() {
            return Ok(None);
        }
        let mut cache = self.validators.lock().map_err(|_| "validator cache poisoned".to_owned())?;
        if let Some(v) = cache.get(pointer) {
            return Ok(Some(Arc::clone(v)));
        }
        let mut root = self.doc.clone();
        if let Value::Object(m) = &mut root {
            m.insert("$schema".into(), Value::String("https://json-schema.org/draft/2020-12/schema".into()));
            m.insert("$ref".into(), Value::String(format!("#{pointer}")));
        }
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("compiling {pointer}: {e}"))?;
        let v = Arc::new(v);
        cache.insert(pointer.to_owned(), Arc::clone(&v));
        Ok(Some(v))
    }

    fn check(&self, pointer: &str, value: &Value, what: &str) -> Vec<String> {
        match self.validator(pointer) {
            Ok(Some(v)) => v.iter_errors(value).map(|e| format!("{what}: {} at {}", e, e.instance_path())).collect(),
            Ok(None) => Vec::new(),
            Err(e) => vec![e],
        }
    }

    /// Violations of a request body against the operation's schema.
    pub fn check_request_body(&self, op: &Operation, body: &Value) -> Vec<String> {
        let ptr = format!("/paths/{}/{}/requestBody/content/application~1json/schema", escape(&op.path), op.method);
        self.check(&ptr, body, &format!("{} {} request", op.method.to_uppercase(), op.path))
    }

    /// Violations of a response body against the schema for its status (if documented).
    pub fn check_response_body(&self, op: &Operation, status: u16, body: &Value) -> Vec<String> {
        let ptr =
            format!("/paths/{}/{}/responses/{status}/content/application~1json/schema", escape(&op.path), op.method);
        self.check(&ptr, body, &format!("{} {} response {status}", op.method.to_uppercase(), op.path))
    }

    /// Whether the document declares a response schema for this status.
    pub fn documents_response(&self, op: &Operation, status: u16) -> bool {
        let ptr = format!("/paths/{}/{}/responses/{status}", escape(&op.path), op.method);
        self.doc.pointer(&ptr).is_some()
    }
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
