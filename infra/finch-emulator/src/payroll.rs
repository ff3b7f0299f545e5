//! Payroll over the synthetic workforces: pay groups, payments and pay statements, served as
//! `/employer/payment` and `/employer/pay-statement`, and `POST /sandbox/payment`.
//!
//! Each entity pays in two groups, as most US employers do: hourly people **biweekly** (80
//! hours, some overtime), salaried people and contractors **semimonthly** (the 15th and the
//! last day, moved to the Friday before a weekend), plus a yearly **off-cycle** bonus run in
//! December for about a third of the salaried. History starts where Finch's initial sync
//! starts: January 1st two years before the emulator's today, plus the year to date
//! (DATA.md §3.2). A statement is a pure function of the person and the period (earnings,
//! federal, state and FICA taxes, a pre-tax 401(k) and medical deduction, the employer's
//! match and FICA), so 20,000 people's two years — a million statements — cost nothing until
//! read, and the same login reads the same pay every time. A payment's totals are the sums of
//! its statements.
//!
//! What Finch documents, enforced: `start_date` and `end_date` required (on `pay_date`,
//! inclusive) and no paging on payments; 1–10 payments per statements request (422
//! `batch_limit_exceeded`), `limit` ≤ 5,000 (422 `page_size_limit_exceeded`, default 100), each
//! payment paged on its own with `paging.count`; an unknown payment a 404 item; a payment whose
//! statements Finch is still fetching a **202 inside the 200** (set by the control API:
//! `POST /_emulator/connections/{id}/payroll`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::{Date, Duration, Month, OffsetDateTime, Weekday};

use crate::Shared;
use crate::api::finch_error;
use crate::people::{PayProfile, Roster, mix, uuid_of};

/// Finch's caps (DATA.md §0).
pub const MAX_PAYMENTS_PER_REQUEST: usize = 10;
pub const MAX_STATEMENTS_LIMIT: u64 = 5_000;
pub const DEFAULT_STATEMENTS_LIMIT: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    Biweekly,
    Semimonthly,
}

impl Frequency {
    fn as_str(self) -> &'static str {
        match self {
            Self::Biweekly => "bi_weekly",
            Self::Semimonthly => "semi_monthly",
        }
    }

    fn periods_per_year(self) -> i64 {
        match self {
            Self::Biweekly => 26,
            Self::Semimonthly => 24,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayGroup {
    pub id: String,
    pub name: &'static str,
    pub frequency: Frequency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayKind {
    Regular,
    OffCycle,
}

/// One payment: a pay run of a group (or a bonus run, or one made through the sandbox).
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub group: Option<usize>,
    pub frequency: Option<Frequency>,
    pub kind: PayKind,
    pub start: Date,
    pub end: Date,
    pub pay_date: Date,
    pub debit_date: Date,
    /// The roster numbers paid, in order (empty for a sandbox payment: see `sandbox`).
    pub members: Vec<u32>,
    /// A sandbox payment's statements, as given (then filled in).
    pub sandbox: Option<Arc<Vec<Value>>>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub gross: i64,
    pub net: i64,
    pub employee_taxes: i64,
    pub employer_taxes: i64,
    pub contributions: i64,
}

/// A payment made through `POST /sandbox/payment`, kept per entity.
#[derive(Debug, Clone)]
pub struct SandboxPayment {
    pub id: String,
    pub start: Date,
    pub end: Date,
    pub pay_date: Date,
    /// Complete pay statements (Finch's model).
    pub statements: Arc<Vec<Value>>,
}

/// An entity's payroll, as of one day: built once per change of its people (see
/// `World::payroll`).
#[derive(Debug)]
pub struct Payroll {
    pub seed: u64,
    pub groups: Vec<PayGroup>,
    /// In pay-date order (then id).
    pub payments: Vec<Payment>,
    by_id: HashMap<String, usize>,
    profiles: HashMap<u32, PayProfile>,
}

/// January 1st two years before `today`: where Finch's initial sync starts (DATA.md §3.2).
pub fn lookback_start(today: Date) -> Date {
    Date::from_calendar_date(today.year() - 2, Month::January, 1).unwrap_or(today)
}

fn last_day(year: i32, month: Month) -> Date {
    let first_next = if month == Month::December {
        Date::from_calendar_date(year + 1, Month::January, 1)
    } else {
        Date::from_calendar_date(year, month.next(), 1)
    };
    first_next.map(|d| d - Duration::days(1)).unwrap_or(Date::MIN)
}

/// The Friday before a weekend day; a weekday as it is.
fn business_day(d: Date) -> Date {
    match d.weekday() {
        Weekday::Saturday => d - Duration::days(1),
        Weekday::Sunday => d - Duration::days(2),
        _ => d,
    }
}

/// One statement's amounts, in cents (no allocation: payments' totals sum a million of these).
#[derive(Debug, Clone, Copy, Default)]
struct Amounts {
    kind: &'static str,
    name: &'static str,
    hours: Option<f64>,
    base: i64,
    overtime_hours: f64,
    overtime: i64,
    gross: i64,
    retirement: i64,
    medical: i64,
    federal: i64,
    state: i64,
    social_security: i64,
    medicare: i64,
    employer_match: i64,
    taxed: bool,
    off_cycle: bool,
}

impl Amounts {
    fn employee_taxes(&self) -> i64 {
        self.federal + self.state + self.social_security + self.medicare
    }

    fn employer_taxes(&self) -> i64 {
        // The employer matches Social Security and Medicare.
        self.social_security + self.medicare
    }

    fn net(&self) -> i64 {
        self.gross - self.employee_taxes() - self.retirement - self.medical
    }
}

fn pct(amount: i64, basis_points: i64) -> i64 {
    amount * basis_points / 10_000
}

/// What person `p` earns on `pay`.
fn amounts(seed: u64, p: &PayProfile, pay: &Payment, frequency: Frequency) -> Amounts {
    let draw = mix(seed, u64::from(p.number), pay.pay_date.to_julian_day() as u64);
    let mut a = Amounts { taxed: !p.contractor, off_cycle: pay.kind == PayKind::OffCycle, ..Amounts::default() };
    if pay.kind == PayKind::OffCycle {
        a.kind = "bonus";
        a.name = "Annual Bonus";
        a.base = pct(p.income_cents, 300 + 100 * (draw % 5) as i64);
    } else if p.contractor {
        a.kind = "1099";
        a.name = "Contractor Payment";
        a.base = p.income_cents / frequency.periods_per_year();
    } else if p.hourly {
        let hours = if p.part_time { 40.0 } else { 80.0 };
        a.kind = "wage";
        a.name = "Regular Hours";
        a.hours = Some(hours);
        a.base = (p.income_cents as f64 * hours) as i64;
        if !p.part_time {
            a.overtime_hours = (draw % 7) as f64;
            a.overtime = (p.income_cents as f64 * 1.5 * a.overtime_hours) as i64;
        }
    } else {
        a.kind = "salary";
        a.name = "Regular Salary";
        a.hours = Some(if p.part_time { 43.33 } else { 86.67 });
        a.base = p.income_cents / frequency.periods_per_year();
    }
    a.gross = a.base + a.overtime;
    if !a.taxed {
        return a;
    }
    if p.retirement {
        a.retirement = pct(a.gross, 500);
        a.employer_match = pct(a.gross, 300);
    }
    if !a.off_cycle && !p.part_time {
        a.medical = 8_500.min(a.gross / 10);
    }
    let taxable = a.gross - a.retirement - a.medical;
    a.federal = pct(taxable, 1_100);
    a.state = pct(taxable, 400);
    a.social_security = pct(a.gross - a.medical, 620);
    a.medicare = pct(a.gross - a.medical, 145);
    a
}

fn money(amount: i64) -> Value {
    json!({"amount": amount, "currency": "usd"})
}

/// Finch's pay statement for `a`.
fn statement(p: &PayProfile, a: &Amounts) -> Value {
    let mut earnings =
        vec![json!({"type": a.kind, "name": a.name, "amount": a.base, "currency": "usd", "hours": a.hours})];
    if a.overtime > 0 {
        earnings.push(
            json!({"type": "overtime", "name": "Overtime", "amount": a.overtime, "currency": "usd", "hours": a.overtime_hours}),
        );
    }
    let (mut taxes, mut deductions, mut contributions) = (Vec::new(), Vec::new(), Vec::new());
    if a.taxed {
        for (kind, name, employer, amount) in [
            ("federal", "Federal Income Tax", false, a.federal),
            ("state", "State Income Tax", false, a.state),
            ("fica", "Social Security", false, a.social_security),
            ("fica", "Medicare", false, a.medicare),
            ("fica", "Social Security", true, a.social_security),
            ("fica", "Medicare", true, a.medicare),
        ] {
            taxes.push(json!({"type": kind, "name": name, "employer": employer, "amount": amount, "currency": "usd"}));
        }
        if a.retirement > 0 {
            deductions.push(
                json!({"name": "401(k)", "amount": a.retirement, "currency": "usd", "pre_tax": true, "type": "401k"}),
            );
            contributions
                .push(json!({"name": "401(k) Match", "amount": a.employer_match, "currency": "usd", "type": "401k"}));
        }
        if a.medical > 0 {
            deductions.push(json!({"name": "Medical", "amount": a.medical, "currency": "usd", "pre_tax": true, "type": "s125_medical"}));
        }
    }
    let total_hours = a.hours.map(|h| h + a.overtime_hours);
    json!({
        "individual_id": p.id,
        "type": if a.off_cycle { "off_cycle_payroll" } else { "regular_payroll" },
        "payment_method": if p.contractor { "check" } else { "direct_deposit" },
        "total_hours": total_hours,
        "gross_pay": money(a.gross),
        "net_pay": money(a.net()),
        "earnings": earnings,
        "taxes": taxes,
        "employee_deductions": deductions,
        "employer_contributions": contributions,
    })
}

/// Whether `p` works during `start..=end`.
fn employed(p: &PayProfile, start: Date, end: Date) -> bool {
    p.start <= end && p.end.is_none_or(|e| e >= start)
}

/// A pay run on the calendar, before anyone is on it.
struct Scheduled {
    /// Index into the entity's pay groups.
    group: usize,
    kind: PayKind,
    start: Date,
    end: Date,
    pay_date: Date,
    /// Tells the run from every other of the entity: its payment id and bonus draws come from it.
    tag: u64,
}

/// The biweekly group's runs paid between `from` and `today`: two-week periods from a Monday
/// the entity's seed picks, paid the Friday after.
fn biweekly_runs(seed: u64, from: Date, today: Date) -> Vec<Scheduled> {
    let mut runs = Vec::new();
    let mut start =
        Date::from_calendar_date(2019, Month::December, 30).unwrap_or(from) + Duration::days((seed % 2) as i64 * 7);
    let mut index = 0u64;
    while start <= today {
        let end = start + Duration::days(13);
        let pay_date = end + Duration::days(5);
        if pay_date >= from && pay_date <= today {
            runs.push(Scheduled { group: 0, kind: PayKind::Regular, start, end, pay_date, tag: index });
        }
        start += Duration::days(14);
        index += 1;
    }
    runs
}

/// The semimonthly group's runs paid between `from` and `today`: the 1st–15th paid the 15th,
/// the 16th–last paid the last (business days), and each December's bonus run, off cycle.
fn semimonthly_runs(from: Date, today: Date) -> Vec<Scheduled> {
    let mut runs = Vec::new();
    let paid = |d: Date| d >= from && d <= today;
    for year in from.year()..=today.year() {
        for month in 1..=12u8 {
            let Ok(month) = Month::try_from(month) else { continue };
            let first = Date::from_calendar_date(year, month, 1).unwrap_or(from);
            let mid = Date::from_calendar_date(year, month, 15).unwrap_or(from);
            for (start, end) in [(first, mid), (mid + Duration::days(1), last_day(year, month))] {
                let pay_date = business_day(end);
                if paid(pay_date) {
                    let tag = 1_000_000 + (year as u64) * 100 + u64::from(month as u8) * 2 + u64::from(start.day() > 1);
                    runs.push(Scheduled { group: 1, kind: PayKind::Regular, start, end, pay_date, tag });
                }
            }
        }
        let pay_date = business_day(Date::from_calendar_date(year, Month::December, 18).unwrap_or(from));
        if paid(pay_date) {
            runs.push(Scheduled {
                group: 1,
                kind: PayKind::OffCycle,
                start: Date::from_calendar_date(year, Month::January, 1).unwrap_or(from),
                end: Date::from_calendar_date(year, Month::December, 31).unwrap_or(from),
                pay_date,
                tag: 2_000_000 + year as u64,
            });
        }
    }
    runs
}

/// Whether `p` is paid in `run`: in the run's group (everyone is, in a
/// biweekly-only roster), employed in its period, and for a bonus run salaried and drawn.
fn on_run(seed: u64, p: &PayProfile, run: &Scheduled, biweekly_only: bool) -> bool {
    let in_group = biweekly_only || (p.hourly && !p.contractor) == (run.group == 0);
    in_group
        && match run.kind {
            PayKind::Regular => employed(p, run.start, run.end),
            PayKind::OffCycle => {
                !p.hourly
                    && !p.contractor
                    && employed(p, run.pay_date, run.pay_date)
                    && mix(seed, u64::from(p.number), run.tag).is_multiple_of(3)
            }
        }
}

/// A payment made in the sandbox (`POST /sandbox/payment`): its statements as given.
fn sandbox_paid(s: &SandboxPayment) -> Payment {
    let mut totals = Totals::default();
    for st in s.statements.iter() {
        totals.gross += st["gross_pay"]["amount"].as_i64().unwrap_or(0);
        totals.net += st["net_pay"]["amount"].as_i64().unwrap_or(0);
    }
    Payment {
        id: s.id.clone(),
        group: None,
        frequency: None,
        kind: PayKind::OffCycle,
        start: s.start,
        end: s.end,
        pay_date: s.pay_date,
        debit_date: s.pay_date,
        members: Vec::new(),
        sandbox: Some(s.statements.clone()),
        totals,
    }
}

impl Payroll {
    /// `roster`'s payroll on `today`, with the sandbox's payments.
    pub fn build(roster: &Roster, sandbox: &[SandboxPayment], today: Date) -> Self {
        let seed = roster.seed;
        let groups = vec![
            PayGroup { id: uuid_of(seed, 1), name: "Hourly (biweekly)", frequency: Frequency::Biweekly },
            PayGroup { id: uuid_of(seed, 2), name: "Salaried (semimonthly)", frequency: Frequency::Semimonthly },
        ];
        let profiles: HashMap<u32, PayProfile> =
            roster.numbers().filter_map(|n| roster.pay_profile(n)).map(|p| (p.number, p)).collect();
        let mut ordered: Vec<&PayProfile> = profiles.values().collect();
        ordered.sort_by_key(|p| p.number);
        let from = lookback_start(today);
        let mut runs = biweekly_runs(seed, from, today);
        if !roster.biweekly_only {
            runs.extend(semimonthly_runs(from, today));
        }
        let mut built: Vec<Payment> = runs
            .into_iter()
            .map(|run| Self::pay(seed, &groups, &ordered, &run, roster.biweekly_only))
            .filter(|p| !p.members.is_empty())
            .collect();
        built.extend(sandbox.iter().filter(|s| s.pay_date <= today).map(sandbox_paid));
        built.sort_by(|a, b| (a.pay_date, &a.id).cmp(&(b.pay_date, &b.id)));
        let by_id = built.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        Self { seed, groups, payments: built, by_id, profiles }
    }

    /// `run` paid: who is on it, and its totals.
    fn pay(seed: u64, groups: &[PayGroup], people: &[&PayProfile], run: &Scheduled, biweekly_only: bool) -> Payment {
        let frequency = groups[run.group].frequency;
        let mut pay = Payment {
            id: uuid_of(seed, 10 + run.tag * 4 + run.group as u64),
            group: Some(run.group),
            frequency: Some(frequency),
            kind: run.kind,
            start: run.start,
            end: run.end,
            pay_date: run.pay_date,
            debit_date: run.pay_date - Duration::days(2),
            members: Vec::new(),
            sandbox: None,
            totals: Totals::default(),
        };
        for p in people.iter().filter(|p| on_run(seed, p, run, biweekly_only)) {
            let a = amounts(seed, p, &pay, frequency);
            pay.totals.gross += a.gross;
            pay.totals.net += a.net();
            pay.totals.employee_taxes += a.employee_taxes();
            pay.totals.employer_taxes += a.employer_taxes();
            pay.totals.contributions += a.employer_match;
            pay.members.push(p.number);
        }
        pay
    }

    pub fn payment(&self, id: &str) -> Option<&Payment> {
        self.by_id.get(id).map(|&i| &self.payments[i])
    }

    /// How many statements `pay` has.
    pub fn statement_count(&self, pay: &Payment) -> usize {
        pay.sandbox.as_ref().map_or(pay.members.len(), |s| s.len())
    }

    /// `pay`'s statements from `offset`, at most `limit`.
    pub fn statements(&self, pay: &Payment, offset: usize, limit: usize) -> Vec<Value> {
        if let Some(given) = &pay.sandbox {
            return given.iter().skip(offset).take(limit).cloned().collect();
        }
        let Some(frequency) = pay.frequency else { return Vec::new() };
        pay.members
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|n| self.profiles.get(n))
            .map(|p| statement(p, &amounts(self.seed, p, pay, frequency)))
            .collect()
    }

    /// Finch's payment model.
    pub fn payment_json(&self, pay: &Payment) -> Value {
        let ids: Vec<Value> = match &pay.sandbox {
            Some(s) => {
                let set: BTreeSet<&str> = s.iter().filter_map(|st| st["individual_id"].as_str()).collect();
                set.into_iter().map(Value::from).collect()
            }
            None => {
                pay.members.iter().filter_map(|n| self.profiles.get(n)).map(|p| Value::from(p.id.clone())).collect()
            }
        };
        let t = pay.totals;
        json!({
            "id": pay.id,
            "pay_period": {"start_date": pay.start.to_string(), "end_date": pay.end.to_string()},
            "pay_date": pay.pay_date.to_string(),
            "debit_date": pay.debit_date.to_string(),
            "company_debit": money(t.gross + t.employer_taxes + t.contributions),
            "gross_pay": money(t.gross),
            "net_pay": money(t.net),
            "employer_taxes": money(t.employer_taxes),
            "employee_taxes": money(t.employee_taxes),
            "individual_ids": ids,
            "pay_group_ids": pay.group.map(|g| vec![self.groups[g].id.clone()]).unwrap_or_default(),
            "pay_frequencies": pay.frequency.map(|f| vec![f.as_str()]).unwrap_or_default(),
        })
    }
}

/// Payments whose statements Finch is still fetching (a 202 inside the 200), per entity.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// The latest this many payments (by pay date).
    pub latest: usize,
    pub ids: BTreeSet<String>,
    /// Until then (for good when `None`).
    pub until: Option<OffsetDateTime>,
}

impl Pending {
    fn holds(&self, payroll: &Payroll, id: &str, now: OffsetDateTime) -> bool {
        if self.until.is_some_and(|u| now >= u) {
            return false;
        }
        if self.ids.contains(id) {
            return true;
        }
        let n = payroll.payments.len();
        payroll.payments[n.saturating_sub(self.latest)..].iter().any(|p| p.id == id)
    }
}

// --- the endpoints ------------------------------------------------------------------------

fn invalid(message: &str) -> Response {
    finch_error(400, json!({"code": 400, "name": "bad_request", "finch_code": "invalid_request", "message": message}))
}

fn parse_date(v: &str) -> Option<Date> {
    Date::parse(v, &time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// `GET /employer/payment?start_date&end_date`: every payment paid in the window, one array.
pub async fn payments(State(s): State<Shared>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let (mut entity_ids, mut start, mut end) = (Vec::new(), None, None);
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "entity_ids" | "entity_ids[]" => entity_ids.push(v.into_owned()),
            "start_date" => start = Some(parse_date(&v)),
            "end_date" => end = Some(parse_date(&v)),
            _ => {}
        }
    }
    let (start, end) = match (start, end) {
        (Some(Some(s)), Some(Some(e))) => (s, e),
        (Some(_), Some(_)) => return invalid("start_date and end_date must be dates (YYYY-MM-DD)"),
        _ => return invalid("start_date and end_date are required"),
    };
    let (c, entity) = match crate::data::access(&s, &headers, "payment", &entity_ids) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let payroll = s.world().payroll(&entity);
    let body: Vec<Value> = payroll
        .payments
        .iter()
        .filter(|p| p.pay_date >= start && p.pay_date <= end)
        .map(|p| payroll.payment_json(p))
        .collect();
    crate::data::fetched(&s, &c, &entity, Value::Array(body))
}

#[derive(Deserialize)]
struct StatementsItem {
    payment_id: String,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
}

#[derive(Deserialize)]
struct StatementsBody {
    requests: Vec<StatementsItem>,
}

/// `POST /employer/pay-statement`: each payment answered on its own, paged on its own.
pub async fn pay_statements(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let entity_ids: Vec<String> = url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "entity_ids" || k == "entity_ids[]")
        .map(|(_, v)| v.into_owned())
        .collect();
    let (c, entity) = match crate::data::access(&s, &headers, "pay_statement", &entity_ids) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let req: StatementsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    if req.requests.is_empty() || req.requests.len() > MAX_PAYMENTS_PER_REQUEST {
        return finch_error(
            422,
            json!({"code": 422, "name": "unprocessable_entity_error", "finch_code": "batch_limit_exceeded", "message": "Batch size exceeds the maximum of 10 payment_ids. Please reduce the number of items in your request."}),
        );
    }
    if req.requests.iter().any(|r| r.limit.is_some_and(|l| l > MAX_STATEMENTS_LIMIT)) {
        return finch_error(
            422,
            json!({"code": 422, "name": "unprocessable_entity_error", "finch_code": "page_size_limit_exceeded", "message": "Page size exceeds the maximum of 5000 items. Please reduce the limit parameter."}),
        );
    }
    let (payroll, pending, now) = {
        let mut w = s.world();
        let payroll = w.payroll(&entity);
        (payroll, w.pay_pending.get(&entity).cloned(), w.now())
    };
    let responses: Vec<Value> = req
        .requests
        .iter()
        .map(|r| {
            let Some(pay) = payroll.payment(&r.payment_id) else {
                return json!({"payment_id": r.payment_id, "code": 404, "body": {"code": 404, "name": "not_found_error", "finch_code": "payment_not_found", "message": format!("No payment with id {} found", r.payment_id)}});
            };
            if pending.as_ref().is_some_and(|p| p.holds(&payroll, &pay.id, now)) {
                return json!({"payment_id": r.payment_id, "code": 202, "body": {"code": 202, "finch_code": "data_sync_in_progress", "message": "The pay statements for this payment are being fetched. Please check back later.", "name": "accepted"}});
            }
            let offset = r.offset.unwrap_or(0) as usize;
            let limit = r.limit.unwrap_or(DEFAULT_STATEMENTS_LIMIT) as usize;
            let statements = payroll.statements(pay, offset, limit);
            json!({"payment_id": r.payment_id, "code": 200, "body": {"paging": {"count": payroll.statement_count(pay), "offset": offset}, "pay_statements": statements}})
        })
        .collect();
    crate::data::fetched(&s, &c, &entity, json!({"responses": responses}))
}

/// Fills in a sandbox statement: Finch's defaults, amounts in cents made `Money`.
fn fill_statement(given: &serde_json::Map<String, Value>) -> Value {
    let money_of = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => json!({"amount": n, "currency": "usd"}),
        Some(other @ Value::Object(_)) => other.clone(),
        _ => json!({"amount": null, "currency": "usd"}),
    };
    let lines = |key: &str| -> Value {
        let items = given.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
        Value::Array(
            items
                .into_iter()
                .map(|mut item| {
                    if let Some(o) = item.as_object_mut() {
                        o.entry("currency").or_insert_with(|| json!("usd"));
                        for k in ["name", "type", "amount"] {
                            o.entry(k).or_insert(Value::Null);
                        }
                        if key == "earnings" {
                            o.entry("hours").or_insert(Value::Null);
                        }
                    }
                    item
                })
                .collect(),
        )
    };
    json!({
        "individual_id": given.get("individual_id").cloned().unwrap_or(Value::Null),
        "type": given.get("type").cloned().unwrap_or_else(|| json!("regular_payroll")),
        "payment_method": given.get("payment_method").cloned().unwrap_or_else(|| json!("direct_deposit")),
        "total_hours": given.get("total_hours").cloned().unwrap_or(Value::Null),
        "gross_pay": money_of(given.get("gross_pay")),
        "net_pay": money_of(given.get("net_pay")),
        "earnings": lines("earnings"),
        "taxes": lines("taxes"),
        "employee_deductions": lines("employee_deductions"),
        "employer_contributions": lines("employer_contributions"),
    })
}

#[derive(Deserialize)]
struct SandboxPaymentBody {
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    pay_statements: Option<Vec<serde_json::Map<String, Value>>>,
}

/// Adds a payment to connection `c`'s `entity` (paid on `end_date`, today by default): the
/// statements given, or a regular-looking statement for everyone employed. Its id and pay date.
pub fn add_payment(
    s: &Shared,
    entity: &str,
    start: Option<Date>,
    end: Option<Date>,
    statements: Option<Vec<Value>>,
) -> (String, Date) {
    let mut w = s.world();
    let today = w.now().date();
    let end = end.unwrap_or(today);
    let start = start.unwrap_or(end - Duration::days(13));
    let statements = match statements {
        Some(given) => given,
        None => {
            let seed = w.roster(entity).seed;
            let roster = w.roster(entity).clone();
            let probe = Payment {
                id: String::new(),
                group: None,
                frequency: Some(Frequency::Semimonthly),
                kind: PayKind::Regular,
                start,
                end,
                pay_date: end,
                debit_date: end,
                members: Vec::new(),
                sandbox: None,
                totals: Totals::default(),
            };
            roster
                .numbers()
                .filter_map(|n| roster.pay_profile(n))
                .filter(|p| employed(p, start, end))
                .map(|p| statement(&p, &amounts(seed, &p, &probe, Frequency::Semimonthly)))
                .collect()
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    w.sandbox_payments.entry(entity.to_owned()).or_default().push(SandboxPayment {
        id: id.clone(),
        start,
        end,
        pay_date: end,
        statements: Arc::new(statements),
    });
    w.touch(entity);
    (id, end)
}

/// `POST /sandbox/payment`: a new payment for the connection's first entity; Finch then sends
/// `payment.created` and `pay_statement.created`.
pub async fn sandbox_payment(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (_, c) = match crate::api::connection_for(&s, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(entity) = c.live_entity_ids().into_iter().next() else {
        return invalid("this connection has no entity left");
    };
    let b: SandboxPaymentBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    let date = |v: &Option<String>| match v {
        Some(v) => parse_date(v).map(Some).ok_or(()),
        None => Ok(None),
    };
    let (Ok(start), Ok(end)) = (date(&b.start_date), date(&b.end_date)) else {
        return invalid("start_date and end_date must be dates (YYYY-MM-DD)");
    };
    let statements = b.pay_statements.map(|list| list.iter().map(fill_statement).collect());
    let (id, pay_date) = add_payment(&s, &entity, start, end, statements);
    let events = crate::webhooks::payment_changed(&s, &c.id, &entity, &id, &pay_date.to_string());
    crate::webhooks::deliver_all(&s, events).await;
    Json(json!({"payment_id": id, "pay_date": pay_date.to_string()})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::seed_of;

    fn day(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn two_years_and_the_year_to_date_of_biweekly_semimonthly_and_bonus_runs() {
        let roster = Roster::new(seed_of("payroll-entity"), 300);
        let today = day("2026-12-02");
        let p = Payroll::build(&roster, &[], today);
        assert_eq!(lookback_start(today), day("2024-01-01"));
        assert!(p.payments.iter().all(|x| x.pay_date >= day("2024-01-01") && x.pay_date <= today));
        let count =
            |f: Frequency, k: PayKind| p.payments.iter().filter(|x| x.frequency == Some(f) && x.kind == k).count();
        // 2024, 2025 and 2026 to Dec 2: 24 + 24 + 22 semimonthly runs, ~76 biweekly, 2 bonus runs.
        assert_eq!(count(Frequency::Semimonthly, PayKind::Regular), 70);
        assert!((75..=77).contains(&count(Frequency::Biweekly, PayKind::Regular)));
        assert_eq!(count(Frequency::Semimonthly, PayKind::OffCycle), 2);
        assert!(p.payments.windows(2).all(|w| w[0].pay_date <= w[1].pay_date));
        assert!(p.payments.iter().all(|x| ![Weekday::Saturday, Weekday::Sunday].contains(&x.pay_date.weekday())));
        // The same every time, ids included; every id distinct.
        let again = Payroll::build(&roster, &[], today);
        assert_eq!(p.payments[5].id, again.payments[5].id);
        let ids: BTreeSet<&str> = p.payments.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids.len(), p.payments.len());
        assert!(p.payments.iter().all(|x| uuid::Uuid::parse_str(&x.id).is_ok()));
    }

    #[test]
    fn statements_add_up_to_their_payment_and_page_in_order() {
        let roster = Roster::new(seed_of("payroll-sums"), 120);
        let p = Payroll::build(&roster, &[], day("2026-12-02"));
        let pay = p.payments.iter().rev().find(|x| x.frequency == Some(Frequency::Semimonthly)).unwrap();
        let all = p.statements(pay, 0, 10_000);
        assert_eq!(all.len(), p.statement_count(pay));
        let gross: i64 = all.iter().map(|s| s["gross_pay"]["amount"].as_i64().unwrap()).sum();
        let net: i64 = all.iter().map(|s| s["net_pay"]["amount"].as_i64().unwrap()).sum();
        let body = p.payment_json(pay);
        assert_eq!(body["gross_pay"]["amount"], gross);
        assert_eq!(body["net_pay"]["amount"], net);
        assert_eq!(body["individual_ids"].as_array().unwrap().len(), all.len());
        for s in &all {
            let g = s["gross_pay"]["amount"].as_i64().unwrap();
            let n = s["net_pay"]["amount"].as_i64().unwrap();
            // Contractors (1099) keep their gross; everyone else pays taxes.
            let contractor = s["earnings"][0]["type"] == "1099";
            assert!(n > 0 && (n < g || contractor && n == g), "net {n} of gross {g}");
        }
        let pages: Vec<Value> = (0..all.len()).step_by(7).flat_map(|o| p.statements(pay, o, 7)).collect();
        assert_eq!(pages, all);
    }

    #[test]
    fn people_are_paid_only_while_employed() {
        let mut roster = Roster::new(seed_of("payroll-leavers"), 60);
        let mut patch = crate::people::Patch::default();
        patch.employment.insert("end_date".into(), json!("2025-03-01"));
        patch.employment.insert("start_date".into(), json!("2015-01-01"));
        roster.change(7, patch);
        let id = roster.person(7).unwrap().id;
        let p = Payroll::build(&roster, &[], day("2026-12-02"));
        let on = |x: &Payment| p.payment_json(x)["individual_ids"].as_array().unwrap().iter().any(|i| i == &json!(id));
        assert!(p.payments.iter().filter(|x| x.pay_date < day("2025-02-01")).any(on));
        assert!(!p.payments.iter().filter(|x| x.start > day("2025-03-01")).any(on));
    }
}
