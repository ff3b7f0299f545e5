//! Typed configuration, read once at cold start.
//!
//! `Config::from_env()` reads the process environment; `Config::from_lookup` takes any lookup
//! function so tests build configurations without touching the environment (`set_var` is
//! unsafe in edition 2024). A missing or malformed value fails init with a message naming the
//! variable: a misconfigured function should not come up and fail every request later.

mod bench;
pub mod env;

use std::time::Duration;

use url::Url;

pub use bench::bench_ca;
pub use env::{ConfigError, Env};

/// Everything the functions need to know about their environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `TABLE_NAME`: the DynamoDB table holding connections, claims, states and code markers.
    pub table_name: String,
    /// `RECORDS_TABLE_NAME` (optional): the table of synced data (records, feed, sync states);
    /// only the functions that sync or serve data have it.
    pub records_table_name: Option<String>,
    /// `SYNC_QUEUE_URL` (optional): the sync workers' queue, for the functions that start a
    /// sync (the callback, webhooks, the app's request, disconnect's purge, the worker itself).
    pub sync_queue_url: Option<String>,
    /// `KMS_KEY_ID`: key id, ARN or alias that encrypts access tokens.
    pub kms_key_id: String,
    /// `FINCH_SECRET_ID`: Secrets Manager id of `{client_id, client_secret, webhook_secret, state_key}`.
    pub finch_secret_id: String,
    /// `FINCH_API_URL` (default `https://api.tryfinch.com`).
    pub finch_api_url: Url,
    /// `FINCH_REDIRECT_URI`: this deployment's `GET /connect/callback`, registered with Finch.
    pub redirect_uri: Url,
    /// `APP_RETURN_URL`: where the browser goes after the redirect-flow callback.
    pub app_return_url: Url,
    /// `CUSTOMER_CLAIM` (default `customer_id`): the JWT claim naming the caller's customer.
    pub customer_claim: String,
    /// `FINCH_TIMEOUT_MS` (default 10 000): per attempt, well inside API Gateway's 30 s.
    pub finch_timeout: Duration,
    /// `FINCH_MAX_RETRIES` (default 2, as Finch's SDKs).
    pub finch_max_retries: u32,
    /// `SECRET_CACHE_TTL_SECONDS` (default 300): how long the Finch secret is cached.
    pub secret_cache_ttl: Duration,
    /// `EVENT_BUS_NAME` (optional): the EventBridge bus for status-change events; when unset
    /// they are only logged.
    pub event_bus_name: Option<String>,
    /// `PREWARM_CONNECTIONS` (default `true`): open the DynamoDB connection during Lambda's
    /// init phase, so the first request does not pay the TCP and TLS handshakes
    /// (BENCHMARKS.md, G9; [`crate::runtime`]).
    pub prewarm_connections: bool,
}

impl Config {
    /// Reads the process environment; a refusal is also logged, so a function that cannot
    /// start says why in its own log group.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok()).inspect_err(ConfigError::log)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let finch_api_url = env.optional("FINCH_API_URL").unwrap_or_else(|| "https://api.tryfinch.com".to_owned());
        Ok(Self {
            table_name: env.required("TABLE_NAME")?,
            records_table_name: env.optional("RECORDS_TABLE_NAME"),
            sync_queue_url: env.optional("SYNC_QUEUE_URL"),
            kms_key_id: env.required("KMS_KEY_ID")?,
            finch_secret_id: env.required("FINCH_SECRET_ID")?,
            finch_api_url: env.url("FINCH_API_URL", &finch_api_url)?,
            redirect_uri: env.url("FINCH_REDIRECT_URI", &env.required("FINCH_REDIRECT_URI")?)?,
            app_return_url: env.url("APP_RETURN_URL", &env.required("APP_RETURN_URL")?)?,
            customer_claim: env.optional("CUSTOMER_CLAIM").unwrap_or_else(|| "customer_id".to_owned()),
            finch_timeout: Duration::from_millis(env.number("FINCH_TIMEOUT_MS", 10_000, 1, u64::MAX)?),
            finch_max_retries: env.int("FINCH_MAX_RETRIES", 2, 0, u64::from(u32::MAX))?,
            secret_cache_ttl: Duration::from_secs(env.number("SECRET_CACHE_TTL_SECONDS", 300, 0, u64::MAX)?),
            event_bus_name: env.optional("EVENT_BUS_NAME"),
            prewarm_connections: env.flag("PREWARM_CONNECTIONS", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("TABLE_NAME", "perch"),
            ("KMS_KEY_ID", "alias/perch"),
            ("FINCH_SECRET_ID", "perch/finch"),
            ("FINCH_REDIRECT_URI", "https://api.example.com/connect/callback"),
            ("APP_RETURN_URL", "https://app.example.com/connections"),
        ])
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned()))
    }

    #[test]
    fn defaults_apply() {
        let c = load(&base()).unwrap();
        assert_eq!(c.finch_api_url.as_str(), "https://api.tryfinch.com/");
        assert_eq!(c.customer_claim, "customer_id");
        assert_eq!(c.finch_max_retries, 2);
    }

    #[test]
    fn missing_and_bad_values_are_named() {
        let mut v = base();
        v.remove("KMS_KEY_ID");
        assert!(load(&v).unwrap_err().to_string().contains("KMS_KEY_ID"));
        let mut v = base();
        v.insert("FINCH_TIMEOUT_MS", "soon");
        assert!(load(&v).unwrap_err().to_string().contains("FINCH_TIMEOUT_MS"));
        let mut v = base();
        v.insert("APP_RETURN_URL", "javascript:alert(1)");
        assert!(load(&v).unwrap_err().to_string().contains("APP_RETURN_URL"));
    }
}
