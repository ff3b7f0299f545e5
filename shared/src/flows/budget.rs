//! One Finch budget for every caller, however many invocations run at once.
//!
//! Finch limits an application per product — 20 requests in any rolling 60 s for company,
//! directory, individual, employment; 12 for payment and pay-statement — across *all* its
//! tokens, and each egress IP to 1,000 requests in 5 minutes with a 60-minute penalty once
//! exceeded (DATA.md §1.10). Sync workers, the status sweep and on-demand runs are separate
//! Lambda invocations: only a shared record can keep them under those limits together. Each
//! window is one item in the table ([`BudgetWindows`]): what was taken, counted by second. To
//! take a request, an invocation reads the windows it needs, checks them, and writes them back
//! conditionally on the version it read — all of them at once, so a request counts against its
//! product's window and the IP's or neither. A lost race reads again. No server of our own.
//!
//! **Rolling, conservatively.** A request taken in second `s` counts until `s + period + 1`:
//! whole seconds can only make Perch wait a little longer than Finch would, never shorter.
//!
//! **Priority.** `reserve` requests of each window are kept for [`Priority::First`] callers
//! (first syncs of new connections, status checks), so routine refreshes never starve them.
//!
//! **Finch's 429.** If Finch refuses anyway (another app on the same IP, a clock skew), the
//! window is blocked for a full period ([`Budget::block`]): Finch's documented advice is to wait
//! for the window to roll, not the SDKs' 0.5–8 s.

use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::Error;
use crate::store::{BudgetWindows, WindowLog};

/// One of Finch's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The item's name: `product:directory`, `ip:default`, …
    pub name: String,
    pub limit: u32,
    pub period: Duration,
    /// Kept for [`Priority::First`].
    pub reserve: u32,
}

impl Window {
    /// Finch's application window of a data product (20 a minute; 12 for payment and
    /// pay-statement), a quarter kept for first syncs.
    pub fn product(product: &str) -> Self {
        let limit = if matches!(product, "payment" | "pay-statement" | "pay_statement") { 12 } else { 20 };
        Self { name: format!("product:{product}"), limit, period: Duration::from_secs(60), reserve: limit / 4 }
    }

    /// The egress IP's window: `limit` below Finch's 1,000 per 5 minutes, whose breach costs an
    /// hour.
    pub fn ip(name: &str, limit: u32) -> Self {
        Self { name: format!("ip:{name}"), limit, period: Duration::from_secs(300), reserve: limit / 10 }
    }
}

/// Finch's limits as this deployment budgets them, read once from the environment by every
/// caller of Finch's data and status endpoints (sync workers, the sweep), so they all name the
/// same windows the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinchLimits {
    /// `FINCH_PRODUCT_LIMIT` (20, Finch's): requests per product window for the whole
    /// application; payment and pay statements get 60 % of it (Finch's 12).
    pub product_limit: u32,
    /// `FINCH_PRODUCT_WINDOW_SECONDS` (60, Finch's rolling minute).
    pub product_period: Duration,
    /// `FINCH_IP_BUDGET` (900): requests per IP window this egress IP may send, below Finch's
    /// 1,000 (whose breach costs an hour).
    pub ip_budget: u32,
    /// `FINCH_IP_WINDOW_SECONDS` (300, Finch's 5 minutes).
    pub ip_period: Duration,
}

impl FinchLimits {
    /// Reads the four settings. The windows' lengths are Finch's; they change only if Finch's
    /// do, or to compress time in the benchmark (BENCHMARKS.md, G13).
    pub fn from_env(
        env: &crate::config::Env<impl Fn(&str) -> Option<String>>,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            product_limit: env.int("FINCH_PRODUCT_LIMIT", 20, 1, 10_000)?,
            product_period: Duration::from_secs(env.number("FINCH_PRODUCT_WINDOW_SECONDS", 60, 1, 3_600)?),
            ip_budget: env.int("FINCH_IP_BUDGET", 900, 1, 1_000)?,
            ip_period: Duration::from_secs(env.number("FINCH_IP_WINDOW_SECONDS", 300, 1, 3_600)?),
        })
    }

    /// The window of a data product.
    pub fn product(&self, product: &str) -> Window {
        let mut w = Window::product(product);
        w.limit = if w.limit == 12 { (self.product_limit * 3 / 5).max(1) } else { self.product_limit };
        w.reserve = w.limit / 4;
        w.period = self.product_period;
        w
    }

    /// This egress IP's window.
    pub fn ip(&self) -> Window {
        Window { period: self.ip_period, ..Window::ip("default", self.ip_budget) }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A new connection's first sync, a status check: may use the reserve.
    First,
    /// A scheduled refresh, a webhook's hint.
    Routine,
}

/// The outcome of asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Not now: the earliest time it could be.
    WaitUntil(OffsetDateTime),
}

/// Checks `log` for `n` more requests at `now`; the log with them taken, or the second from
/// which they would fit.
pub fn admit(w: &Window, log: &WindowLog, priority: Priority, now: i64, n: u32) -> Result<WindowLog, i64> {
    if let Some(until) = log.blocked_until.filter(|u| *u > now) {
        return Err(until);
    }
    let period = i64::try_from(w.period.as_secs()).unwrap_or(i64::MAX);
    // Still counting: taken after `now - period - 1`.
    let live: Vec<(i64, u32)> = log.taken.iter().copied().filter(|(s, _)| s + period + 1 > now).collect();
    let used: u32 = live.iter().map(|(_, c)| c).sum();
    let limit = match priority {
        Priority::First => w.limit,
        Priority::Routine => w.limit.saturating_sub(w.reserve),
    };
    if used + n > limit {
        // The earliest second by which enough of what was taken has stopped counting.
        let mut freed = 0;
        let need = used + n - limit;
        for (s, c) in &live {
            freed += c;
            if freed >= need {
                return Err(s + period + 1);
            }
        }
        return Err(now + period + 1);
    }
    let mut taken = live;
    match taken.last_mut() {
        Some((s, c)) if *s == now => *c += n,
        _ => taken.push((now, n)),
    }
    Ok(WindowLog { version: log.version + 1, taken, blocked_until: None })
}

/// The shared budget over a store.
pub struct Budget<'a> {
    store: &'a dyn BudgetWindows,
}

/// How many times a lost race is read again before the caller is told to come back.
const RACES: usize = 20;

impl<'a> Budget<'a> {
    pub fn new(store: &'a dyn BudgetWindows) -> Self {
        Self { store }
    }

    /// Takes one request from every window in `windows` at `now`, or none.
    pub async fn try_take(&self, windows: &[Window], priority: Priority, now: OffsetDateTime) -> Result<Taken, Error> {
        if windows.is_empty() {
            return Ok(Taken::Yes);
        }
        let names: Vec<&str> = windows.iter().map(|w| w.name.as_str()).collect();
        let second = now.unix_timestamp();
        for _ in 0..RACES {
            let logs = self.store.read_windows(&names).await?;
            let mut next = Vec::with_capacity(windows.len());
            let mut wait: Option<i64> = None;
            for (w, log) in windows.iter().zip(&logs) {
                match admit(w, log, priority, second, 1) {
                    Ok(l) => next.push(l),
                    Err(at) => wait = Some(wait.map_or(at, |x| x.max(at))),
                }
            }
            if let Some(at) = wait {
                return Ok(Taken::WaitUntil(OffsetDateTime::from_unix_timestamp(at).unwrap_or(now)));
            }
            let writes: Vec<(&str, &WindowLog)> = names.iter().copied().zip(next.iter()).collect();
            if self.store.write_windows(&writes).await? {
                return Ok(Taken::Yes);
            }
        }
        // Twenty invocations won in a row: the window is busy; come back in a second.
        Ok(Taken::WaitUntil(now + time::Duration::seconds(1)))
    }

    /// Finch refused for `window` (its 429): nothing more from it until a full period has passed.
    pub async fn block(&self, window: &Window, now: OffsetDateTime) -> Result<(), Error> {
        let until = now.unix_timestamp() + i64::try_from(window.period.as_secs()).unwrap_or(60);
        for _ in 0..RACES {
            let log = self.store.read_windows(&[&window.name]).await?.pop().unwrap_or_default();
            let blocked = WindowLog {
                version: log.version + 1,
                blocked_until: Some(log.blocked_until.unwrap_or(0).max(until)),
                ..log
            };
            if self.store.write_windows(&[(&window.name, &blocked)]).await? {
                return Ok(());
            }
        }
        Err(Error::internal(format!("the {} window could not be blocked: too many writers", window.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u32, reserve: u32) -> Window {
        Window { name: "t".into(), limit, period: Duration::from_secs(60), reserve }
    }

    #[test]
    fn a_window_grants_up_to_its_limit_then_names_when_one_frees() {
        let w = window(3, 0);
        let mut log = WindowLog::default();
        for now in [100, 100, 130] {
            log = admit(&w, &log, Priority::Routine, now, 1).unwrap();
        }
        assert_eq!(log.taken, vec![(100, 2), (130, 1)]);
        assert_eq!(log.version, 3);
        // Both of second 100 count until 161 (conservatively: Finch's window is rolling).
        assert_eq!(admit(&w, &log, Priority::Routine, 150, 1), Err(161));
        assert_eq!(admit(&w, &log, Priority::Routine, 160, 1), Err(161));
        let later = admit(&w, &log, Priority::Routine, 161, 1).unwrap();
        assert_eq!(later.taken, vec![(130, 1), (161, 1)], "what stopped counting is dropped");
    }

    #[test]
    fn the_reserve_is_for_first_syncs_and_a_block_holds_everyone() {
        let w = window(4, 1);
        let mut log = WindowLog::default();
        for _ in 0..3 {
            log = admit(&w, &log, Priority::Routine, 10, 1).unwrap();
        }
        assert!(admit(&w, &log, Priority::Routine, 10, 1).is_err(), "routine callers leave the reserve");
        let log = admit(&w, &log, Priority::First, 10, 1).unwrap();
        assert!(admit(&w, &log, Priority::First, 10, 1).is_err(), "the limit holds for everyone");
        let blocked = WindowLog { blocked_until: Some(500), ..WindowLog::default() };
        assert_eq!(admit(&w, &blocked, Priority::First, 100, 1), Err(500));
        assert!(admit(&w, &blocked, Priority::First, 500, 1).is_ok());
    }

    #[test]
    fn finchs_windows() {
        assert_eq!((Window::product("directory").limit, Window::product("pay-statement").limit), (20, 12));
        assert_eq!(Window::ip("nat-a", 900).period, Duration::from_secs(300));
    }
}
