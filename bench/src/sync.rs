//! Perch Sync at scale (PERFORMANCE.md G12–G15), every worker its own process under the
//! Runtime API emulator, as Lambda runs it.
//!
//! - **A full sync of one 20,000-person connection** (G12, G14, CPU per 1,000 records): the
//!   shipped `sync-worker` fed from the stack's sync queue (moto) as Lambda's event source feeds
//!   it — one message an invocation (`BatchSize: 1`), continuations included — every AWS and
//!   Finch call through the counting proxy ([`crate::aws`], forwarding only: a sync's writes
//!   never repeat, so there is nothing to replay). Its Finch calls are set against the fewest
//!   the caps allow ([`minimum_calls`]).
//! - **Serving it** (CPU per 1,000 records served): the shipped `connection-data` paging
//!   through the whole change feed (1,000 entries a page) and the joined employee view (500
//!   people a page, each decrypted).
//! - **The same sync the common way** (G15): `bench/peer-node/sync.mjs`, Finch's official Node
//!   SDK (auto-paging, `retrieveMany`) and AWS SDK v3 writing the records, under the same
//!   Runtime API emulator, the same emulator and the same proxy, in the same run.
//! - **Compliance** (G13): 200 connections synced by 4 worker processes at once (the queue's
//!   `MaximumConcurrency`) against the emulator enforcing Finch's per-product and per-IP limits,
//!   time compressed ×4: Finch's counts in windows of 15 s and 75 s instead of 60 s and 300 s,
//!   Perch told the same (`FINCH_PRODUCT_WINDOW_SECONDS`, `FINCH_IP_WINDOW_SECONDS`).
//!
//! CPU is the worker process's own (`schedstat`), from its first event to its last answer;
//! peak RSS is its `VmHWM`. The emulators' own time (moto, DynamoDB Local) is in the wall figures only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use perch_tests::TestStack;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{BoxError, Subject, aws, environment, invoke_within, procfs, runtime_api, scenarios, spawn};

/// Finch's caps (DATA.md §0): ids per directory page and per individual/employment batch.
const CAP: u64 = 10_000;

/// The four organization products a connection grants here.
const ORG: &[&str] = &["company", "directory", "individual", "employment"];

/// How long one worker invocation may run: Lambda's maximum, as `template.yaml` sets it.
const INVOCATION: Duration = Duration::from_secs(900);

/// One full sync of one connection.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FullSync {
    pub label: String,
    pub employees: u64,
    /// Finch requests by `METHOD /path`.
    pub finch_calls: BTreeMap<String, u64>,
    pub finch_total: u64,
    /// The fewest requests Finch's caps allow for this company ([`minimum_calls`]).
    pub minimum: u64,
    /// AWS requests by operation.
    pub aws_calls: BTreeMap<String, u64>,
    /// Records written (company, directory entries, individuals, employments).
    pub records: u64,
    pub invocations: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

/// Reading one synced connection back through `connection-data`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Served {
    pub route: String,
    /// Records in the answers (feed entries; people × their three records).
    pub records: u64,
    pub pages: u64,
    pub cpu_seconds: f64,
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

/// Many connections, several workers, Finch's limits enforced.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Compliance {
    pub connections: u64,
    pub workers: u64,
    /// Finch's product window as enforced (requests per `product_window_s`).
    pub product_limit: u64,
    pub product_window_s: f64,
    pub seconds: f64,
    /// Finch requests by product.
    pub requests: BTreeMap<String, u64>,
    /// 429s the emulator answered.
    pub rate_limited: u64,
    /// Achieved rate over the budget, per product.
    pub budget_share: BTreeMap<String, f64>,
    pub cpu_seconds: f64,
    /// The largest of the workers' peak RSS.
    pub peak_rss_kib: u64,
    /// Connections whose every entity ended `current`.
    pub current: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SyncResults {
    pub full: Vec<FullSync>,
    pub served: Vec<Served>,
    pub compliance: Option<Compliance>,
}

/// The fewest Finch requests a full sync of one entity of `n` people can make: the company,
/// the directory in pages of 10,000, and one individual and one employment batch of 10,000 ids
/// per page (a directory of nobody is still one page, with no batch after it).
pub fn minimum_calls(n: u64) -> u64 {
    let pages = n.div_ceil(CAP).max(1);
    1 + pages + if n == 0 { 0 } else { 2 * n.div_ceil(CAP) }
}

pub async fn run(
    smoke: bool,
    bin_dir: &std::path::Path,
    peer: Option<&std::path::Path>,
    moto: &str,
) -> Result<SyncResults, BoxError> {
    let employees: u32 = if smoke { 2_000 } else { 20_000 };
    let mut out = SyncResults::default();

    let stack = TestStack::start_syncing_quiet(|env| {
        // A 10,000-person batch is many megabytes the emulator checks against Finch's spec.
        env.insert("FINCH_TIMEOUT_MS", "120000".into());
    })
    .await;
    let proxy = aws::AwsEndpoint::start(moto.to_owned(), stack.finch.base_url.clone()).await?;
    proxy.pass_through();
    stack.finch.shared.world().default_employees = Some(employees);
    let id = stack.connect_with("bench-sync", ORG).await;

    let worker = Subject::binary_in(bin_dir, "sync-worker");
    let bench = Bench { stack: &stack, proxy: &proxy, id: &id, employees: u64::from(employees) };
    let full = full_sync(&worker, &bench).await?;
    eprintln!("{}", full_line(&full));
    out.full.push(full);

    let data = Subject::binary_in(bin_dir, "connection-data");
    for route in ["changes", "employees"] {
        let s = serve(&data, &bench, route).await?;
        eprintln!(
            "served {:<9} {:>6} records in {:>4} pages: cpu {:.2} s ({:.1} ms per 1,000), peak RSS {} KiB",
            s.route,
            s.records,
            s.pages,
            s.cpu_seconds,
            s.cpu_seconds * 1e6 / s.records.max(1) as f64,
            s.peak_rss_kib
        );
        out.served.push(s);
    }

    if let Some(dir) = peer {
        let peer = Subject {
            name: "peer-node-sync".into(),
            program: std::path::PathBuf::from("node"),
            args: vec![dir.join("bootstrap.mjs").display().to_string(), "./sync.mjs".into()],
            artifact: None,
        };
        let p = peer_sync(&peer, &bench).await?;
        eprintln!("{}", full_line(&p));
        out.full.push(p);
    }
    drop(stack);

    let connections = if smoke { 24 } else { 200 };
    let c = compliance(&worker, moto, connections, 4).await?;
    eprintln!(
        "compliance: {} connections, {} workers, {:.0} s: requests {:?}, 429s {}, share {:?}, {} current, peak RSS {} KiB",
        c.connections, c.workers, c.seconds, c.requests, c.rate_limited, c.budget_share, c.current, c.peak_rss_kib
    );
    out.compliance = Some(c);
    Ok(out)
}

fn full_line(f: &FullSync) -> String {
    format!(
        "sync {:<16} {} people: {} Finch calls (minimum {}), {} records in {} invocations, {:.1} s; cpu {:.2} s ({:.1} ms per 1,000 records), peak RSS {} KiB",
        f.label,
        f.employees,
        f.finch_total,
        f.minimum,
        f.records,
        f.invocations,
        f.seconds,
        f.cpu_seconds,
        f.cpu_seconds * 1e6 / f.records.max(1) as f64,
        f.peak_rss_kib
    )
}

/// A worker process under its own Runtime API emulator.
pub(crate) struct Process {
    api: runtime_api::RuntimeApi,
    child: tokio::process::Child,
    pub(crate) pid: u32,
}

impl Process {
    pub(crate) async fn start(
        subject: &Subject,
        stack: &TestStack,
        proxy: &aws::AwsEndpoint,
        extra: &[(&str, String)],
    ) -> Result<Self, BoxError> {
        let mut api = runtime_api::RuntimeApi::start(INVOCATION).await?;
        let mut env = environment(stack, proxy, &api.addr, &subject.name);
        let c = &stack.config;
        let mut set = vec![
            ("RECORDS_TABLE_NAME", c.records_table_name.clone().unwrap_or_default()),
            ("SYNC_QUEUE_URL", c.sync_queue_url.clone().unwrap_or_default()),
            ("FINCH_TIMEOUT_MS", "120000".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
        ];
        set.extend(extra.iter().cloned());
        for (k, v) in set {
            env.retain(|(key, _)| key != k);
            env.push((k.to_owned(), v));
        }
        let child = spawn(subject, &env)?;
        let pid = child.id().ok_or("no pid")?;
        api.wait_next(Duration::from_secs(20)).await.map_err(|e| format!("{}: {e}", subject.name))?;
        Ok(Self { api, child, pid })
    }

    /// Stops the process; the CPU seconds it used since `cpu_before` and its peak RSS.
    pub(crate) async fn stop(mut self, cpu_before: Duration) -> Result<(f64, u64), BoxError> {
        let cpu = procfs::cpu(self.pid).saturating_sub(cpu_before).as_secs_f64();
        let rss = procfs::peak_rss_kib(self.pid);
        self.child.kill().await?;
        Ok((cpu, rss))
    }

    async fn invoke(&mut self, event: &Value) -> Result<Value, BoxError> {
        let (answer, _, _) =
            invoke_within(&mut self.api, self.pid, event, INVOCATION + Duration::from_secs(10)).await?;
        Ok(answer)
    }
}

/// Lambda's SQS event source for the worker: one message, handed over, deleted unless the
/// worker reported it failed. `Ok(None)` when nothing is visible.
async fn deliver_one(sqs: &aws_sdk_sqs::Client, url: &str, worker: &mut Process) -> Result<Option<bool>, BoxError> {
    // Hidden for as long as an invocation may take, as the template's visibility timeout does.
    let hidden = (INVOCATION.as_secs() + 60) as i32;
    let got = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(1)
        .wait_time_seconds(1)
        .visibility_timeout(hidden)
        .send()
        .await?;
    let Some(m) = got.messages.unwrap_or_default().pop() else { return Ok(None) };
    let event = json!({"Records": [{
        "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench-sync",
        "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {}
    }]});
    let answer = worker.invoke(&event).await?;
    let ok = answer["batchItemFailures"].as_array().is_some_and(Vec::is_empty);
    if ok && let Some(handle) = m.receipt_handle {
        sqs.delete_message().queue_url(url).receipt_handle(handle).send().await?;
    }
    Ok(Some(ok))
}

/// Messages on the queue: visible, delayed (a continuation after a rate limit) and in flight.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, BoxError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let got = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    Ok(got.attributes.unwrap_or_default().values().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// Feeds `worker` from the queue until the queue holds nothing: no message visible, delayed
/// or in flight (a message stays in flight until its invocation, which sends any continuation
/// first, is over and the message deleted). Invocations made, and the failures among them.
pub(crate) async fn feed(sqs: &aws_sdk_sqs::Client, url: &str, worker: &mut Process) -> Result<(u64, u64), BoxError> {
    let (mut invocations, mut failed) = (0, 0);
    loop {
        match deliver_one(sqs, url, worker).await? {
            Some(ok) => {
                invocations += 1;
                failed += u64::from(!ok);
            }
            None if queue_depth(sqs, url).await? == 0 => return Ok((invocations, failed)),
            None => {}
        }
    }
}

pub(crate) async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&perch_tests::sdk_config().await)
}

/// The connection the single-connection runs sync and serve, and where.
struct Bench<'a> {
    stack: &'a TestStack,
    proxy: &'a aws::AwsEndpoint,
    id: &'a str,
    employees: u64,
}

/// G12, G14: the connection's first sync, as the callback queued it.
async fn full_sync(subject: &Subject, b: &Bench<'_>) -> Result<FullSync, BoxError> {
    let Bench { stack, proxy, id, employees } = *b;
    let url = stack.config.sync_queue_url.clone().ok_or("the stack has no sync queue")?;
    let sqs = sqs_client().await;
    let mut worker = Process::start(subject, stack, proxy, &[]).await?;
    proxy.reset_counts();
    let cpu_before = procfs::cpu(worker.pid);
    let started = Instant::now();
    let (invocations, failed) = feed(&sqs, &url, &mut worker).await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = worker.stop(cpu_before).await?;
    if failed > 0 {
        return Err(format!("the sync worker reported {failed} failed invocations").into());
    }
    let state = sync_state(stack, "bench-sync", id).await;
    let counts = &state["entities"][0]["last_success"]["counts"];
    if state["entities"][0]["state"] != "current" {
        return Err(format!("the sync did not end current: {state}").into());
    }
    let records = ["added", "updated"].iter().filter_map(|k| counts[*k].as_u64()).sum::<u64>();
    Ok(full_sync_of("perch sync-worker", employees, proxy, records, invocations, seconds, usage))
}

/// A full sync's figures, with the proxy's counts since its last reset.
fn full_sync_of(
    label: &str,
    employees: u64,
    proxy: &aws::AwsEndpoint,
    records: u64,
    invocations: u64,
    seconds: f64,
    (cpu_seconds, peak_rss_kib): (f64, u64),
) -> FullSync {
    let (finch_calls, aws_calls) = split_counts(proxy);
    FullSync {
        label: label.into(),
        employees,
        finch_total: finch_calls.values().sum(),
        finch_calls,
        minimum: minimum_calls(employees),
        aws_calls,
        records,
        invocations,
        seconds,
        cpu_seconds,
        peak_rss_kib,
    }
}

/// The proxy's counts since its last reset, split into Finch's and AWS's.
pub(crate) fn split_counts(proxy: &aws::AwsEndpoint) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (counts, _) = proxy.counts();
    let (mut finch, mut aws) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in counts {
        match k.strip_prefix("finch:") {
            Some(call) => finch.insert(call.to_owned(), v),
            None => aws.insert(k, v),
        };
    }
    (finch, aws)
}

/// `GET /connections/{id}/sync` through the stack's own routes.
pub(crate) async fn sync_state(stack: &TestStack, customer: &str, id: &str) -> Value {
    let r = stack.get(&format!("/connections/{id}/sync"), Some(&stack.token(customer))).await;
    r.json().await.unwrap_or(Value::Null)
}

/// Every page of `route` (`changes` or `employees`) through the shipped `connection-data`.
async fn serve(subject: &Subject, b: &Bench<'_>, route: &str) -> Result<Served, BoxError> {
    let Bench { stack, proxy, id, .. } = *b;
    let mut worker = Process::start(subject, stack, proxy, &[]).await?;
    let (limit, per_item) = if route == "changes" { ("1000", 1) } else { ("500", 3) };
    let path = format!("/connections/{id}/{route}");
    let template = format!("/connections/{{id}}/{route}");
    let (mut cursor, mut records, mut pages) = (None::<String>, 0u64, 0u64);
    let cpu_before = procfs::cpu(worker.pid);
    let started = Instant::now();
    loop {
        let mut query = vec![("limit", limit)];
        if let Some(c) = cursor.as_deref() {
            query.push(("cursor", c));
        }
        let event = scenarios::http_event("GET", &template, &path, &query, Some("bench-sync"), &[], None);
        let answer = worker.invoke(&event).await?;
        if answer["statusCode"] != 200 {
            return Err(format!("GET {path} answered {answer}").into());
        }
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("null"))?;
        pages += 1;
        records += body[route].as_array().map_or(0, |a| a.len() as u64) * per_item;
        if body["has_more"] != true {
            break;
        }
        cursor = body["next_cursor"].as_str().map(str::to_owned);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_seconds, peak_rss_kib) = worker.stop(cpu_before).await?;
    Ok(Served { route: route.to_owned(), records, pages, cpu_seconds, seconds, peak_rss_kib })
}

/// G15: the same full sync by the Node.js peer, writing to the same records table under its
/// own partition.
async fn peer_sync(subject: &Subject, b: &Bench<'_>) -> Result<FullSync, BoxError> {
    let Bench { stack, proxy, id, employees } = *b;
    // The peer is handed a token for the connection: what its own callback would have stored
    // (reading it back is one GetItem and one Decrypt, nothing beside 60,000 records).
    let (token, entity) = {
        let mut w = stack.finch.shared.world();
        let entity = w.connections.get(id).map(|c| c.account_id()).ok_or("the connection is not at the emulator")?;
        (w.mint_token(id), entity)
    };
    let mut peer = Process::start(subject, stack, proxy, &[]).await?;
    proxy.reset_counts();
    let cpu_before = procfs::cpu(peer.pid);
    let started = Instant::now();
    let answer = peer
        .invoke(&json!({
            "access_token": token, "connection_id": id, "entity_id": entity,
            "table": stack.config.records_table_name,
        }))
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = peer.stop(cpu_before).await?;
    let records = answer["records"].as_u64().ok_or_else(|| format!("the peer answered {answer}"))?;
    Ok(full_sync_of("peer-node", employees, proxy, records, 1, seconds, usage))
}

/// G13: `n` new connections of 5 people, their first syncs run by `workers` processes at once
/// against Finch's limits, time compressed ×4.
async fn compliance(subject: &Subject, moto: &str, n: u64, workers: usize) -> Result<Compliance, BoxError> {
    const SCALE: u64 = 4;
    const PRODUCT_LIMIT: u64 = 20;
    let product_window = Duration::from_secs(60 / SCALE);
    let ip_window = Duration::from_secs(300 / SCALE);
    let stack = TestStack::start_syncing_quiet(|_| {}).await;
    let proxy = aws::AwsEndpoint::start(moto.to_owned(), stack.finch.base_url.clone()).await?;
    proxy.pass_through();
    stack.finch.shared.world().default_employees = Some(5);
    let mut ids = Vec::new();
    for i in 0..n {
        // One customer each: Finch keeps one connection per customer and provider, so a second
        // flow of the same customer would re-authenticate the first.
        let customer = format!("bench-many-{i}");
        let id = stack.connect_with(&customer, ORG).await;
        ids.push((customer, id));
    }
    {
        let mut w = stack.finch.shared.world();
        w.rate_limits = Some(serde_json::from_value(json!({
            "ip_limit": 1000, "ip_window_ms": ip_window.as_millis() as u64,
            "penalty_ms": 3_600_000 / SCALE,
            "product_limit": PRODUCT_LIMIT, "slow_product_limit": 12,
            "product_window_ms": product_window.as_millis() as u64,
        }))?);
        w.rate_state = Default::default();
        w.requests.clear();
    }
    let env = [
        ("FINCH_PRODUCT_LIMIT", PRODUCT_LIMIT.to_string()),
        ("FINCH_PRODUCT_WINDOW_SECONDS", product_window.as_secs().to_string()),
        ("FINCH_IP_WINDOW_SECONDS", ip_window.as_secs().to_string()),
    ];
    let mut procs = Vec::new();
    for _ in 0..workers {
        procs.push(Process::start(subject, &stack, &proxy, &env).await?);
    }
    let url = stack.config.sync_queue_url.clone().ok_or("the stack has no sync queue")?;
    let sqs = sqs_client().await;
    proxy.reset_counts();
    let cpu_before: Vec<Duration> = procs.iter().map(|p| procfs::cpu(p.pid)).collect();
    let started = Instant::now();
    let feeders = procs.iter_mut().map(|p| feed(&sqs, &url, p));
    let fed = futures_util::future::try_join_all(feeders).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (mut cpu_seconds, mut peak_rss_kib) = (0.0, 0);
    for (p, before) in procs.into_iter().zip(cpu_before) {
        let (cpu, rss) = p.stop(before).await?;
        cpu_seconds += cpu;
        peak_rss_kib = peak_rss_kib.max(rss);
    }
    let failed: u64 = fed.iter().map(|(_, f)| f).sum();
    if failed > 0 {
        return Err(format!("the sync workers reported {failed} failed invocations").into());
    }
    let rate_limited = {
        let mut w = stack.finch.shared.world();
        w.rate_limits = None;
        w.rate_state.rejected
    };
    let (finch_calls, _) = split_counts(&proxy);
    let mut requests = BTreeMap::new();
    for (call, count) in finch_calls {
        if let Some(p) = product_of(&call) {
            *requests.entry(p.to_owned()).or_default() += count;
        }
    }
    let budget = PRODUCT_LIMIT as f64 / product_window.as_secs_f64();
    let budget_share = requests.iter().map(|(p, c)| (p.clone(), *c as f64 / seconds / budget)).collect();
    let mut current = 0;
    for (customer, id) in &ids {
        let state = sync_state(&stack, customer, id).await;
        let entities = state["entities"].as_array().cloned().unwrap_or_default();
        current += u64::from(!entities.is_empty() && entities.iter().all(|e| e["state"] == "current"));
    }
    Ok(Compliance {
        connections: n,
        workers: workers as u64,
        product_limit: PRODUCT_LIMIT,
        product_window_s: product_window.as_secs_f64(),
        seconds,
        requests,
        rate_limited,
        budget_share,
        cpu_seconds,
        peak_rss_kib,
        current,
    })
}

/// The product a Finch data call counts against.
fn product_of(call: &str) -> Option<&'static str> {
    let path = call.split_once(' ').map_or(call, |(_, p)| p);
    ORG.iter().copied().find(|p| path == format!("/employer/{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_is_the_caps_arithmetic() {
        assert_eq!(minimum_calls(20_000), 7, "company, two pages, two batches of each kind");
        assert_eq!(minimum_calls(20_001), 10);
        assert_eq!(minimum_calls(5), 4);
        assert_eq!(minimum_calls(0), 2, "company and one empty page");
    }

    #[test]
    fn finch_calls_are_counted_against_their_product() {
        assert_eq!(product_of("GET /employer/directory"), Some("directory"));
        assert_eq!(product_of("POST /employer/individual"), Some("individual"));
        assert_eq!(product_of("GET /introspect"), None);
    }
}
