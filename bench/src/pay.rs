//! Perch Sync's pay history and person index at scale (issue 17's benchmark), every worker its
//! own process under the Runtime API emulator, fed from the sync queue as Lambda would.
//!
//! - **A pay backfill** of one 20,000-employee company paid biweekly for two years and the
//!   year to date (about a million pay statements): the shipped `sync-worker` against the
//!   emulator enforcing Finch's limits, time compressed (its windows and Perch's shortened
//!   alike), DynamoDB on DynamoDB Local. Finch's calls are set against the fewest the caps allow
//!   ([`pay_minimum`]), the backfill's duration against the bound Finch's 12 requests a window
//!   put on it, CPU per 1,000 statements, peak RSS.
//! - **Reconciliation** of 100,000 people across 10 connections of one customer: each roster
//!   drawn from one population (neighbouring connections share half their people) with each
//!   provider's flaws (namesakes, renamed people, missing birthdays, other e-mail domains). The
//!   index is built from scratch by the shipped worker (the `index` work a run hands on), and
//!   its links are scored against the emulator's ground truth: precision over the pairs it
//!   linked; recall over the pairs that share a key naming them alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use perch_tests::TestStack;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sync::{Process, feed, minimum_calls, split_counts, sqs_client, sync_state};
use crate::{BoxError, Subject, aws};

/// Finch's caps on pay statements (DATA.md §0).
const PAYMENTS_PER_REQUEST: u64 = 10;
const STATEMENTS_PER_PAGE: u64 = 5_000;
/// Finch's limit on payment and pay-statement requests per window, and the share routine work
/// takes of it (a quarter is kept for first syncs: `perch::flows::budget`).
const SLOW_LIMIT: u64 = 12;
const ROUTINE_SLOW_LIMIT: u64 = 9;
/// Time compressed ×6: Finch's minute is ten seconds, its five minutes fifty.
const SCALE: u64 = 6;

const PAY: &[&str] = &["company", "directory", "individual", "employment", "payment", "pay_statement"];
const ORG: &[&str] = &["company", "directory", "individual", "employment"];

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PayBackfill {
    pub employees: u64,
    pub payments: u64,
    pub statements: u64,
    /// Finch requests by `METHOD /path`.
    pub finch_calls: BTreeMap<String, u64>,
    /// The fewest the caps allow: the organization's, one payment listing, and the statements'.
    pub minimum_org: u64,
    pub minimum_listing: u64,
    pub minimum_statements: u64,
    pub window_s: f64,
    pub seconds: f64,
    /// Finch's limit alone: the statements' fewest requests at 12 a window.
    pub bound_seconds: f64,
    /// The same for the requests Perch made, at the 9 a window routine work takes.
    pub routine_bound_seconds: f64,
    pub rate_limited: u64,
    pub invocations: u64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Reconciliation {
    pub connections: u64,
    /// Sources indexed (people of every connection) and the humans they are.
    pub sources: u64,
    pub humans: u64,
    pub persons: u64,
    /// Pairs of sources the index put in one person, and how many were one human.
    pub linked_pairs: u64,
    pub correct_pairs: u64,
    /// Pairs of sources of one human sharing a key that names them alone, and how many the
    /// index linked.
    pub keyed_pairs: u64,
    pub keyed_found: u64,
    pub ambiguities: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    pub invocations: u64,
}

impl Reconciliation {
    pub fn precision(&self) -> f64 {
        if self.linked_pairs == 0 { 1.0 } else { self.correct_pairs as f64 / self.linked_pairs as f64 }
    }

    pub fn recall(&self) -> f64 {
        if self.keyed_pairs == 0 { 1.0 } else { self.keyed_found as f64 / self.keyed_pairs as f64 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PayResults {
    pub backfill: Option<PayBackfill>,
    pub reconciliation: Option<Reconciliation>,
}

/// The fewest pay requests Finch's caps allow for payments of `sizes` statements each: one
/// listing (the endpoint has no paging), and every payment's pages of 5,000, ten a request.
pub fn pay_minimum(sizes: &[u64]) -> (u64, u64) {
    let pages: u64 = sizes.iter().map(|n| n.div_ceil(STATEMENTS_PER_PAGE).max(1)).sum();
    (1, pages.div_ceil(PAYMENTS_PER_REQUEST))
}

/// The backfill (when `backfill`), then the reconciliation (when `people`).
pub async fn run(
    smoke: bool,
    bin_dir: &std::path::Path,
    moto: &str,
    backfill: bool,
    people: bool,
) -> Result<PayResults, BoxError> {
    let worker = Subject::binary_in(bin_dir, "sync-worker");
    let backfill =
        if backfill { Some(run_backfill(&worker, moto, if smoke { 500 } else { 20_000 }).await?) } else { None };
    if let Some(backfill) = &backfill {
        report_backfill(backfill);
    }
    if !people {
        return Ok(PayResults { backfill, reconciliation: None });
    }
    let r = reconciliation(&worker, moto, 10, if smoke { 300 } else { 10_000 }).await?;
    eprintln!(
        "reconciliation: {} sources of {} humans in {} connections → {} persons; precision {:.4} ({} of {} pairs), recall {:.4} ({} of {} keyed pairs), {} ambiguities; {:.0} s, cpu {:.2} s, peak RSS {} KiB",
        r.sources,
        r.humans,
        r.connections,
        r.persons,
        r.precision(),
        r.correct_pairs,
        r.linked_pairs,
        r.recall(),
        r.keyed_found,
        r.keyed_pairs,
        r.ambiguities,
        r.seconds,
        r.cpu_seconds,
        r.peak_rss_kib
    );
    Ok(PayResults { backfill, reconciliation: Some(r) })
}

fn report_backfill(backfill: &PayBackfill) {
    eprintln!(
        "pay backfill {} people: {} payments, {} statements; Finch calls {:?} (minimum: {} + {} + {}); {:.0} s (Finch's bound {:.0} s, at Perch's routine share {:.0} s), {} 429s; cpu {:.2} s ({:.2} ms per 1,000 statements), peak RSS {} KiB",
        backfill.employees,
        backfill.payments,
        backfill.statements,
        backfill.finch_calls,
        backfill.minimum_org,
        backfill.minimum_listing,
        backfill.minimum_statements,
        backfill.seconds,
        backfill.bound_seconds,
        backfill.routine_bound_seconds,
        backfill.rate_limited,
        backfill.cpu_seconds,
        backfill.cpu_seconds * 1e6 / backfill.statements.max(1) as f64,
        backfill.peak_rss_kib,
    );
}

/// A worker's environment beyond the stack's.
type Env = Vec<(&'static str, String)>;

/// Finch's limits, enforced by the emulator in compressed time, and Perch told the same.
fn compressed(stack: &TestStack) -> Result<(Duration, Env), BoxError> {
    let product_window = Duration::from_secs(60 / SCALE);
    let ip_window = Duration::from_secs(300 / SCALE);
    let mut w = stack.finch.shared.world();
    w.rate_limits = Some(serde_json::from_value(json!({
        "ip_limit": 1000, "ip_window_ms": ip_window.as_millis() as u64, "penalty_ms": 3_600_000 / SCALE,
        "product_limit": 20, "slow_product_limit": SLOW_LIMIT, "product_window_ms": product_window.as_millis() as u64,
    }))?);
    w.rate_state = Default::default();
    let env = vec![
        ("FINCH_PRODUCT_WINDOW_SECONDS", product_window.as_secs().to_string()),
        ("FINCH_IP_WINDOW_SECONDS", ip_window.as_secs().to_string()),
        // A 5,000-statement page is megabytes the emulator checks against Finch's spec.
        ("FINCH_TIMEOUT_MS", "300000".to_owned()),
    ];
    Ok((product_window, env))
}

/// The backfill of one company of `employees`, everyone paid biweekly.
async fn run_backfill(subject: &Subject, moto: &str, employees: u32) -> Result<PayBackfill, BoxError> {
    let stack = TestStack::start_syncing_quiet(|env| {
        env.insert("FINCH_TIMEOUT_MS", "300000".into());
    })
    .await;
    let proxy = aws::AwsEndpoint::start(moto.to_owned(), stack.finch.base_url.clone()).await?;
    proxy.pass_through();
    stack.finch.shared.world().default_employees = Some(employees);
    let id = stack.connect_with("bench-pay", PAY).await;
    let sizes: Vec<u64> = {
        let mut w = stack.finch.shared.world();
        let entity = w.connections.get(&id).map(|c| c.account_id()).ok_or("no such connection at the emulator")?;
        w.roster(&entity).biweekly_only = true;
        w.touch(&entity);
        let p = w.payroll(&entity);
        p.payments.iter().map(|x| p.statement_count(x) as u64).collect()
    };
    let (window, env) = compressed(&stack)?;
    let url = stack.config.sync_queue_url.clone().ok_or("the stack has no sync queue")?;
    let sqs = sqs_client().await;
    let worker = Process::start(subject, &stack, &proxy, &env).await?;
    proxy.reset_counts();
    let Measured { invocations, seconds, cpu_seconds, peak_rss_kib } = drain(&sqs, &url, worker).await?;
    let state = sync_state(&stack, "bench-pay", &id).await;
    let pay = &state["entities"][0]["pay"];
    let statements: u64 = sizes.iter().sum();
    if pay["state"] != "current" || pay["pay_statements"].as_u64() != Some(statements) {
        return Err(format!("the backfill did not end current with every statement: {state}").into());
    }
    let rate_limited = {
        let mut w = stack.finch.shared.world();
        w.rate_limits = None;
        w.rate_state.rejected
    };
    let (finch_calls, _) = split_counts(&proxy);
    let (listing, minimum_statements) = pay_minimum(&sizes);
    let bound_seconds = minimum_statements.div_ceil(SLOW_LIMIT).saturating_sub(1) as f64 * window.as_secs_f64();
    let made = finch_calls.get("POST /employer/pay-statement").copied().unwrap_or(0);
    let routine_bound_seconds = made.div_ceil(ROUTINE_SLOW_LIMIT).saturating_sub(1) as f64 * window.as_secs_f64();
    Ok(PayBackfill {
        employees: u64::from(employees),
        payments: sizes.len() as u64,
        statements,
        finch_calls,
        minimum_org: minimum_calls(u64::from(employees)),
        minimum_listing: listing,
        minimum_statements,
        window_s: window.as_secs_f64(),
        seconds,
        bound_seconds,
        routine_bound_seconds,
        rate_limited,
        invocations,
        cpu_seconds,
        peak_rss_kib,
    })
}

/// One worker's figures over a drained queue.
struct Measured {
    invocations: u64,
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

/// Feeds `worker` until the queue is empty, then stops it; its figures from the first message.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, mut worker: Process) -> Result<Measured, BoxError> {
    let cpu_before = crate::procfs::cpu(worker.pid);
    let started = Instant::now();
    let (invocations, failed) = feed(sqs, url, &mut worker).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_seconds, peak_rss_kib) = worker.stop(cpu_before).await?;
    if failed > 0 {
        return Err(format!("the worker reported {failed} failed invocations").into());
    }
    Ok(Measured { invocations, seconds, cpu_seconds, peak_rss_kib })
}

/// A connection of `customer` made through Finch Connect as `username` (each username reaches
/// its own company of the same employer): its id.
async fn connect_as(stack: &TestStack, customer: &str, products: &[&str], username: &str) -> Result<String, BoxError> {
    let s = stack.new_session(customer, json!({"products": products, "additional": true})).await;
    let url = s["connect_url"].as_str().ok_or("no connect_url")?;
    let r = perch_tests::finch_login(&stack.http, url, "gusto", username, None).await;
    let back = stack.get(&perch_tests::location(&r), None).await;
    let loc = url::Url::parse(&perch_tests::location(&back))?;
    Ok(loc.query_pairs().find(|(k, _)| k == "connection_id").map(|(_, v)| v.into_owned()).ok_or("no connection")?)
}

/// Who each source is, and its keys as a provider shows them.
struct Shown {
    human: String,
    name_dob: Option<(String, String, String)>,
    email: String,
}

/// `connections` connections of `size` people each, drawn from one population (neighbours
/// share half), synced, then indexed from scratch and scored.
async fn reconciliation(
    subject: &Subject,
    moto: &str,
    connections: u32,
    size: u32,
) -> Result<Reconciliation, BoxError> {
    let customer = "bench-people";
    let stack = TestStack::start_syncing_quiet(|_| {}).await;
    let proxy = aws::AwsEndpoint::start(moto.to_owned(), stack.finch.base_url.clone()).await?;
    proxy.pass_through();
    stack.finch.shared.world().default_employees = Some(5);
    let mut ids = Vec::new();
    for k in 0..connections {
        let id = connect_as(&stack, customer, ORG, &format!("good_user_{k}")).await?;
        let mut w = stack.finch.shared.world();
        let entity = w.connections.get(&id).map(|c| c.account_id()).ok_or("no such connection at the emulator")?;
        let population = finch_emulator::people::Population {
            seed: finch_emulator::people::seed_of("population|bench-people"),
            offset: k * size / 2,
        };
        w.rosters.insert(
            entity.clone(),
            finch_emulator::people::Roster::drawn(finch_emulator::people::seed_of(&entity), size, population),
        );
        w.touch(&entity);
        ids.push((id, entity));
    }
    // The syncs (the index follows each run).
    let url = stack.config.sync_queue_url.clone().ok_or("the stack has no sync queue")?;
    let sqs = sqs_client().await;
    let (window, env) = compressed(&stack)?;
    let _ = window;
    let mut worker = Process::start(subject, &stack, &proxy, &env).await?;
    let (_, failed) = feed(&sqs, &url, &mut worker).await?;
    if failed > 0 {
        return Err(format!("the sync worker reported {failed} failed invocations").into());
    }
    // The index from scratch: every index item of the customer deleted, then the worker asked to
    // take in each connection's feed from its start — what `Trigger::Index` work does.
    drop_index(&stack, customer).await?;
    for (id, _) in &ids {
        let work = perch::flows::sync::SyncWork::new(
            perch::domain::ConnectionId::parse(id.as_str())?,
            perch::flows::sync::Trigger::Index,
        );
        sqs.send_message().queue_url(&url).message_body(serde_json::to_string(&work)?).send().await?;
    }
    let Measured { invocations, seconds, cpu_seconds, peak_rss_kib } = drain(&sqs, &url, worker).await?;

    // The ground truth and each provider's flaws, from the emulator's rosters.
    let mut shown: HashMap<String, Shown> = HashMap::new();
    let mut namesakes: HashMap<(String, (String, String, String)), u32> = HashMap::new();
    {
        let mut w = stack.finch.shared.world();
        for (_, entity) in &ids {
            let r = w.roster(entity).clone();
            for n in r.numbers() {
                let p = r.person(n).ok_or("a listed person")?;
                let name_dob = (!p.dob_withheld).then(|| {
                    let norm = perch::crypto::match_keys::normalise_name;
                    (norm(&p.first_name), norm(&p.last_name), p.dob.clone())
                });
                if let Some(k) = &name_dob {
                    *namesakes.entry((entity.clone(), k.clone())).or_default() += 1;
                }
                shown.insert(
                    p.id.clone(),
                    Shown { human: r.truth(n).ok_or("a truth")?, name_dob, email: p.work_email.to_lowercase() },
                );
            }
        }
    }
    let entity_of: HashMap<String, String> = {
        let w = stack.finch.shared.world();
        ids.iter()
            .flat_map(|(_, e)| {
                w.rosters
                    .get(e)
                    .into_iter()
                    .flat_map(move |r| r.numbers().filter_map(move |n| Some((r.person(n)?.id, e.clone()))))
            })
            .collect()
    };
    // The index as built.
    let store = stack.app.store.as_ref();
    let c = perch::domain::CustomerId::parse(customer)?;
    let mut persons = Vec::new();
    let mut after: Option<perch::domain::PersonId> = None;
    loop {
        let page = perch::store::people::PersonIndex::persons_page(store, &c, after.as_ref(), 1_000).await?;
        let Some(last) = page.last().map(|p| p.person_id.clone()) else { break };
        persons.extend(page);
        after = Some(last);
    }
    let mut r = Reconciliation {
        connections: u64::from(connections),
        sources: shown.len() as u64,
        humans: shown.values().map(|s| s.human.as_str()).collect::<HashSet<_>>().len() as u64,
        persons: persons.len() as u64,
        seconds,
        cpu_seconds,
        peak_rss_kib,
        invocations,
        ..Default::default()
    };
    let mut person_of: HashMap<&str, &str> = HashMap::new();
    for p in &persons {
        r.ambiguities += u64::from(!p.ambiguities.is_empty());
        let ids: Vec<&str> = p.sources.iter().map(|l| l.source.individual_id.as_str()).collect();
        for (i, a) in ids.iter().enumerate() {
            person_of.insert(a, p.person_id.as_str());
            for b in &ids[i + 1..] {
                r.linked_pairs += 1;
                r.correct_pairs += u64::from(shown.get(*a).map(|s| &s.human) == shown.get(*b).map(|s| &s.human));
            }
        }
    }
    // Every pair of one human's sources in two connections, and whether a key names them alone.
    let mut by_human: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, s) in &shown {
        by_human.entry(s.human.as_str()).or_default().push(id.as_str());
    }
    for sources in by_human.values() {
        for (i, a) in sources.iter().enumerate() {
            for b in &sources[i + 1..] {
                let (x, y) = (&shown[*a], &shown[*b]);
                let unique = |id: &str, k: &(String, String, String)| {
                    namesakes.get(&(entity_of[id].clone(), k.clone())).copied().unwrap_or(0) == 1
                };
                let by_name = match (&x.name_dob, &y.name_dob) {
                    (Some(k), Some(l)) => k == l && unique(a, k) && unique(b, l),
                    _ => false,
                };
                if by_name || x.email == y.email {
                    r.keyed_pairs += 1;
                    r.keyed_found += u64::from(person_of.contains_key(a) && person_of.get(a) == person_of.get(b));
                }
            }
        }
    }
    Ok(r)
}

/// Deletes every item of `customer`'s person index (the `P#` partition), the match key too.
async fn drop_index(stack: &TestStack, customer: &str) -> Result<(), BoxError> {
    let ddb = aws_sdk_dynamodb::Client::new(&perch_tests::sdk_config().await);
    let table = stack.config.records_table_name.clone().ok_or("no records table")?;
    let pk = aws_sdk_dynamodb::types::AttributeValue::S(format!("P#{customer}"));
    loop {
        let page = ddb
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", pk.clone())
            .projection_expression("pk, sk")
            .limit(25)
            .send()
            .await?;
        let items = page.items.unwrap_or_default();
        if items.is_empty() {
            return Ok(());
        }
        let requests = items
            .into_iter()
            .map(|key| {
                let del = aws_sdk_dynamodb::types::DeleteRequest::builder().set_key(Some(key)).build()?;
                Ok(aws_sdk_dynamodb::types::WriteRequest::builder().delete_request(del).build())
            })
            .collect::<Result<Vec<_>, aws_sdk_dynamodb::error::BuildError>>()?;
        ddb.batch_write_item().request_items(&table, requests).send().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pay_minimum_is_the_caps_arithmetic() {
        // 78 payments of 20,000: four pages each, ten pages a request.
        assert_eq!(pay_minimum(&[20_000; 78]), (1, 32));
        // Small payments: ten a request, whatever their size.
        assert_eq!(pay_minimum(&[20; 148]), (1, 15));
        assert_eq!(pay_minimum(&[5_001, 0]), (1, 1));
    }
}
