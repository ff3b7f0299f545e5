//! Logging set-up shared by every binary.
//!
//! JSON lines to stdout, as Lambda's `LogFormat: JSON` expects; the level comes from
//! `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config) or `RUST_LOG`, default `info`.
//! TRACE is refused in production builds of Perch's own crates: the runtime's TRACE dumps raw
//! event payloads, and a callback payload holds an OAuth code.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned())
        .to_ascii_lowercase();
    // Never below DEBUG: see the module docs.
    let level = if level.contains("trace") { level.replace("trace", "debug") } else { level };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .init();
}
