//! How the sweep runs: budget, workers, segments, pages, margins; read once at cold start.

use std::time::Duration;

use crate::config::{ConfigError, Env};
use crate::flows::budget::FinchLimits;

/// How the sweep runs; read from the environment at cold start.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// `SWEEP_BUDGET_REQUESTS` (900) per `SWEEP_BUDGET_WINDOW_SECONDS` (300): Finch requests
    /// per window per egress IP, below Finch's 1,000 / 5 min.
    pub budget: u32,
    pub budget_window: Duration,
    /// `SWEEP_WORKERS` (1): invocations sharing the budget (the event source's max concurrency).
    pub workers: u32,
    /// `SWEEP_RECHECK_SECONDS` (86 400): a connection checked or updated more recently is skipped.
    pub recheck_after: Duration,
    /// `SWEEP_SEGMENTS` (8): parallel-scan segments per sweep.
    pub segments: u32,
    /// `SWEEP_PAGE_SIZE` (100): items read per scan page (the memory bound).
    pub page_size: i32,
    /// `SWEEP_IN_FLIGHT` (8): concurrent checks within an invocation.
    pub in_flight: usize,
    /// `SWEEP_QUEUE_URL`: the SQS queue of segments (required to fan out).
    pub queue_url: Option<String>,
    /// `SWEEP_TIME_MARGIN_SECONDS` (30): stop starting work this long before the deadline.
    pub time_margin: Duration,
    /// `SWEEP_SHARED_BUDGET` (true): take each request from Finch's windows shared with the
    /// sync workers too (`FINCH_IP_BUDGET`, 900, for the egress IP's; see [`FinchLimits`]).
    pub shared_budget: bool,
    pub limits: FinchLimits,
}

impl SweepSettings {
    /// Reads the process environment; a refusal is logged (see [`crate::config::Config::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok()).inspect_err(ConfigError::log)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        Ok(Self {
            budget: env.int("SWEEP_BUDGET_REQUESTS", 900, 1, 1_000_000)?,
            budget_window: Duration::from_secs(env.number("SWEEP_BUDGET_WINDOW_SECONDS", 300, 1, u64::MAX)?),
            workers: env.int("SWEEP_WORKERS", 1, 1, 1000)?,
            recheck_after: Duration::from_secs(env.number("SWEEP_RECHECK_SECONDS", 86_400, 0, u64::MAX)?),
            segments: env.int("SWEEP_SEGMENTS", 8, 1, 1_000_000)?,
            page_size: env.int("SWEEP_PAGE_SIZE", 100, 1, 1000)?,
            in_flight: env.int("SWEEP_IN_FLIGHT", 8, 1, 256)?,
            queue_url: env.optional("SWEEP_QUEUE_URL"),
            time_margin: Duration::from_secs(env.number("SWEEP_TIME_MARGIN_SECONDS", 30, 0, u64::MAX)?),
            shared_budget: env.flag("SWEEP_SHARED_BUDGET", true)?,
            limits: FinchLimits::from_env(&env)?,
        })
    }

    /// The shared windows a request takes from: the IP's, and `product`'s when it reads one.
    pub fn shared_windows(&self, product: Option<&str>) -> Vec<crate::flows::budget::Window> {
        if !self.shared_budget {
            return Vec::new();
        }
        let mut windows = vec![self.limits.ip()];
        windows.extend(product.map(|p| self.limits.product(p)));
        windows
    }

    /// The spacing between two request slots of one invocation.
    pub fn slot(&self) -> Duration {
        self.budget_window.mul_f64(f64::from(self.workers) / f64::from(self.budget))
    }
}
