//! The connections page (`web/`), served by the local stack next to the API it calls.
//!
//! A fixed table of files, not a directory listing: nothing outside it can be asked for, so
//! there is no path to traverse. The files are read at each request (edit the page, reload the
//! browser); Finch's Connect SDK comes from `web/node_modules`, which `scripts/run.sh` installs
//! with `npm ci`. The page is sent with a Content-Security-Policy that allows scripts from this
//! origin only and frames from Finch's Connect (here, the emulator's origin) only.
//!
//! `GET /dev/config` tells the page it is on the local stack: where the Finch emulator's
//! dashboard is, to flip a connection to `reauth` as Finch would.

use std::path::{Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Served path → (file under the web directory, content type).
pub const FILES: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/app.css", "app.css", "text/css; charset=utf-8"),
    (
        "/vendor/finch-connect.js",
        "node_modules/@tryfinch/react-connect/dist/index.js",
        "text/javascript; charset=utf-8",
    ),
];

/// Where the page's files are: `PERCH_WEB_DIR`, else the repository's `web/` (this crate's
/// place in the tree is fixed, and perch-local only ever runs from a checkout).
pub fn web_dir() -> PathBuf {
    std::env::var_os("PERCH_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web"))
}

/// The policy for the page: its own scripts and styles, API calls to its own origin, and
/// Finch Connect's iframe from `connect_origin` (Finch's own in production).
pub fn content_security_policy(connect_origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
         frame-src {connect_origin}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// Answers one of [`FILES`]: `file` under `dir`, as `content_type`.
pub async fn serve(dir: &Path, file: &str, content_type: &'static str, connect_origin: &str) -> Response {
    let bytes = match tokio::fs::read(dir.join(file)).await {
        Ok(b) => b,
        Err(e) => {
            let hint =
                if file.starts_with("node_modules") { " (run `npm ci` in web/; scripts/run.sh does)" } else { "" };
            tracing::warn!(file, error = %e, "connections page file missing");
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": format!("{file} is missing from {}{hint}", dir.display())})),
            )
                .into_response();
        }
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(connect_origin)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}
