//! Logging set-up shared by every binary.
//!
//! JSON lines to stdout, as Lambda's `LogFormat: JSON` expects, each with every span it is
//! written in (`spans`): the request's (its request id and connection) and the flow's; the level comes from
//! `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config) or `RUST_LOG`, default `info`.
//! TRACE is refused in production builds of Perch's own crates: the runtime's TRACE dumps raw
//! event payloads, and a callback payload holds an OAuth code.
//!
//! The filter is [`Targets`] (`info`, or `info,perch=debug`: a level per target prefix), not
//! `EnvFilter`: the same directives Lambda's log levels need, without the regex engine that
//! `EnvFilter` links in for span-field matching (~0.3 MB of every binary) and builds at init.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    // Neither set: the empty setting, which `filter` reads as `info`.
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_target(false)
                .without_time(),
        )
        .with(filter(&level))
        .init();
}

/// The filter for a level setting: a bad or empty one is `info`; TRACE becomes DEBUG.
pub fn filter(setting: &str) -> Targets {
    let setting = setting.to_ascii_lowercase();
    // Never below DEBUG: see the module docs.
    let setting = setting.replace("trace", "debug");
    let parsed = if setting.trim().is_empty() { None } else { setting.parse::<Targets>().ok() };
    parsed.unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn levels_and_targets() {
        assert!(filter("").would_enable("perch", &Level::INFO));
        assert!(!filter("").would_enable("perch", &Level::DEBUG));
        assert!(filter("DEBUG").would_enable("perch::store", &Level::DEBUG));
        assert!(!filter("warn").would_enable("perch", &Level::INFO));
        let mixed = filter("warn,perch=debug");
        assert!(mixed.would_enable("perch::store", &Level::DEBUG) && !mixed.would_enable("hyper", &Level::INFO));
        assert!(!filter("not a level!!").would_enable("perch", &Level::DEBUG));
    }

    #[test]
    fn trace_is_never_enabled() {
        for setting in ["trace", "TRACE", "info,lambda_runtime=trace"] {
            let f = filter(setting);
            assert!(!f.would_enable("lambda_runtime", &Level::TRACE), "{setting}");
        }
        assert!(filter("TRACE").would_enable("lambda_runtime", &Level::DEBUG));
    }
}
