//! An OpenAPI 3.1 document as a referee: find the operation of a request, and check request
//! and response bodies against its schemas.
//!
//! Used twice: the Finch emulator checks every request it receives and every answer it gives
//! against Finch's document, and Perch's tests check Perch's answers against Perch's own.
//!
//! Finch's document is 3.1 but still uses 3.0's `nullable`, which JSON Schema 2020-12 ignores;
//! the loader rewrites `nullable: true` into a `null` type so documented-nullable values
//! validate, and 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum` (beside `minimum`/`maximum`,
//! as in `POST /sandbox/payment`) into 3.1's numbers. Schemas are compiled lazily, one validator per body, each rooted at the whole
//! document so `#/components/...` resolves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

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

impl Spec {
    /// Parses a JSON OpenAPI document.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let mut doc: Value = serde_json::from_str(json)?;
        normalise_nullable(&mut doc);
        Ok(Self { doc, validators: Mutex::new(HashMap::new()) })
    }

    /// The (normalised) document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Every `(METHOD, path template)` the document defines.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(paths) = self.doc.get("paths").and_then(Value::as_object) {
            for (path, item) in paths {
                for m in ["get", "put", "post", "delete", "patch"] {
                    if item.get(m).is_some() {
                        out.push((m.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
        out
    }
}

fn normalise_nullable(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(normalise_nullable),
        Value::Object(map) => {
            map.values_mut().for_each(normalise_nullable);
            for (flag, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
                match map.get(flag) {
                    Some(Value::Bool(true)) => {
                        if let Some(b) = map.remove(bound) {
                            map.insert(flag.into(), b);
                        } else {
                            map.remove(flag);
                        }
                    }
                    Some(Value::Bool(false)) => {
                        map.remove(flag);
                    }
                    _ => {}
                }
            }
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
            // A JSON pointer in a URI fragment is percent-encoded (RFC 6901 §6): `{id}` included.
            let fragment: String = pointer
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                        (b as char).to_string()
                    }
                    other => format!("%{other:02X}"),
                })
                .collect();
            m.insert("$ref".into(), Value::String(format!("#{fragment}")));
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

    /// Violations of a whole response: its status must be documented for the operation, and its
    /// body must match the schema documented for that status and content type. Response
    /// objects may be `$ref`s to `#/components/responses/…`.
    pub fn check_response(&self, op: &Operation, status: u16, content_type: &str, body: &[u8]) -> Vec<String> {
        let what = format!("{} {} response {status}", op.method.to_uppercase(), op.path);
        let mut ptr = format!("/paths/{}/{}/responses/{status}", escape(&op.path), op.method);
        let Some(mut response) = self.doc.pointer(&ptr) else {
            return vec![format!("{what}: status not documented")];
        };
        if let Some(r) = response.get("$ref").and_then(Value::as_str) {
            ptr = r.trim_start_matches('#').to_owned();
            match self.doc.pointer(&ptr) {
                Some(x) => response = x,
                None => return vec![format!("{what}: dangling $ref {r}")],
            }
        }
        let ct = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_empty() {
                Vec::new()
            } else {
                vec![format!("{what}: documented without a body, got {} bytes", body.len())]
            };
        };
        if !content.contains_key(&ct) {
            return vec![format!("{what}: content type {ct:?} not documented")];
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return vec![format!("{what}: body is not JSON: {e}")],
        };
        self.check(&format!("{ptr}/content/{}/schema", escape(&ct)), &value, &what)
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

    const DOC: &str = r##"{"openapi": "3.1.0", "paths": {
        "/things/{id}": {"post": {"security": [{"basicAuth": []}],
            "parameters": [{"$ref": "#/components/parameters/API-Version"}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
            "responses": {"201": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}}},
        "components": {"parameters": {"API-Version": {"name": "Finch-API-Version", "in": "header"}},
            "schemas": {"Thing": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "minLength": 1}, "note": {"type": "string", "nullable": true}}}}}}"##;

    #[test]
    fn finds_templated_operations_and_their_security() {
        let s = Spec::from_json(DOC).unwrap();
        let op = s.operation("POST", "/things/42").unwrap();
        assert_eq!((op.path.as_str(), op.security.as_slice()), ("/things/{id}", ["basicAuth".to_owned()].as_slice()));
        assert!(op.requires_version_header && op.has_json_body && op.body_required);
        assert!(s.operation("GET", "/things/42").is_none());
        assert_eq!(s.operations(), vec![("POST".to_owned(), "/things/{id}".to_owned())]);
    }

    #[test]
    fn validates_bodies_and_honours_nullable() {
        let s = Spec::from_json(DOC).unwrap();
        let op = s.operation("POST", "/things/1").unwrap();
        assert!(s.check_request_body(&op, &json!({"name": "a", "note": null})).is_empty());
        assert_eq!(s.check_request_body(&op, &json!({"name": ""})).len(), 1);
        assert!(s.documents_response(&op, 201) && !s.documents_response(&op, 500));
        assert_eq!(s.check_response_body(&op, 201, &json!({})).len(), 1);
    }

    #[test]
    fn rewrites_boolean_exclusive_bounds_as_numbers() {
        let doc = DOC.replace(
            r#""minLength": 1}"#,
            r#""minLength": 1}, "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": true}"#,
        );
        let s = Spec::from_json(&doc).unwrap();
        let op = s.operation("POST", "/things/1").unwrap();
        assert!(s.check_request_body(&op, &json!({"name": "a", "n": 1})).is_empty());
        assert_eq!(s.check_request_body(&op, &json!({"name": "a", "n": 0})).len(), 1);
    }
}
