//! `perch-bench`: Perch's functions as shipped (release profile), each run as its own process
//! under a Lambda Runtime API emulator on loopback, measured the way PERFORMANCE.md §8 asks.
//!
//! Per function:
//! - **init**: exec → first `GET /next`, wall time and CPU time (`schedstat` of every thread:
//!   stable where wall time is noisy), over `--spawns` fresh processes; peak RSS then;
//! - **warm**: `--invocations` invocations of its everyday path — wall time from handing over
//!   the event to receiving the answer, CPU time of the whole loop turn (event in → next
//!   `GET /next`), remote calls per invocation to each AWS service and to Finch, peak RSS after
//!   1,000 and after all invocations;
//! - **size**: the binary, stripped, and deflated as a zip would hold it.
//!
//! The same-run baseline is a hello-world `lambda_runtime` binary with the same profile and
//! runtime flavour (`perch-bench-hello`), so ratios hold on a noisy machine.
//!
//! AWS is moto behind a recording proxy that then replays (see [`aws`]); Finch is the
//! emulator; both on loopback. `scripts/bench.sh` builds, starts moto and runs this.

mod aws;
mod cold_first;
mod critical_path;
mod pay;
mod procfs;
mod report;
mod runtime_api;
mod scenarios;
mod stats;
mod sweep;
mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use perch_tests::TestStack;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stats::{Summary, summarize, values};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MICROS: Duration = Duration::from_micros(1);
const MILLIS: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Opts {
    smoke: bool,
    bin_dir: PathBuf,
    out: PathBuf,
    spawns: usize,
    invocations: usize,
    only: Option<String>,
    /// Count allocations under valgrind (off with `--no-allocations`).
    allocations: bool,
    /// Also write callgrind profiles of each function's warm path (`--callgrind`).
    callgrind: bool,
    /// Save the results as the new reference (`bench/results.json`) and write them into
    /// `BENCHMARKS.md`.
    save: bool,
    /// The Node.js peer's folder (`bench/peer-node`, with its `node_modules`).
    peer: Option<PathBuf>,
    /// The arm64 artifacts Lambda runs, whose sizes G6 is about, by binary name: found in
    /// `sam build`'s output (`--shipped .aws-sam/build`, from `scripts/build-lambdas.sh`).
    shipped: BTreeMap<String, PathBuf>,
    /// Only the callback's critical-path scenario (G11), with the `oauth-callback` binary
    /// found in `--bin-dir` (`--critical-path`).
    critical_path: bool,
    /// Only the first request after a cold start (G9), with a `bench-tls` build of
    /// `list-connections` found in `--bin-dir` (`--cold-first`).
    cold_first: bool,
}

impl Opts {
    fn parse() -> Result<Self, BoxError> {
        let mut o = Self {
            smoke: false,
            bin_dir: PathBuf::from("target/release"),
            out: PathBuf::from("target/bench"),
            spawns: 30,
            invocations: 10_000,
            only: None,
            allocations: true,
            callgrind: false,
            save: false,
            peer: None,
            shipped: BTreeMap::new(),
            critical_path: false,
            cold_first: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--smoke" => (o.smoke, o.spawns, o.invocations) = (true, 5, 50),
                "--bin-dir" => o.bin_dir = PathBuf::from(value()?),
                "--out" => o.out = PathBuf::from(value()?),
                "--spawns" => o.spawns = value()?.parse()?,
                "--invocations" => o.invocations = value()?.parse()?,
                "--only" => o.only = Some(value()?),
                "--save" => o.save = true,
                "--no-allocations" => o.allocations = false,
                "--callgrind" => o.callgrind = true,
                "--peer" => o.peer = Some(PathBuf::from(value()?)),
                "--shipped" => o.shipped = shipped_artifacts(Path::new(&value()?))?,
                "--critical-path" => o.critical_path = true,
                "--cold-first" => o.cold_first = true,
                other => return Err(format!("unknown argument {other}; see bench/src/main.rs").into()),
            }
        }
        Ok(o)
    }
}

/// What is measured: a binary of ours, or the Node.js peer.
struct Subject {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// The file whose size is reported (none for the peer).
    artifact: Option<PathBuf>,
}

impl Subject {
    fn binary(opts: &Opts, name: &str) -> Self {
        Self::binary_in(&opts.bin_dir, name)
    }

    fn binary_in(dir: &Path, name: &str) -> Self {
        let program = dir.join(name);
        Self { name: name.to_owned(), artifact: Some(program.clone()), program, args: Vec::new() }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Results {
    functions: Vec<Measured>,
    sweep: Vec<sweep::SweepRun>,
    /// Perch Sync (G12–G15), when measured.
    #[serde(default)]
    sync: Option<sync::SyncResults>,
    /// The pay history and the person index (issue 17), when measured.
    #[serde(default)]
    pay: Option<pay::PayResults>,
}

/// Everything measured for one binary.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Measured {
    name: String,
    /// Stripped size and deflated size, bytes.
    size: u64,
    zipped: u64,
    init_wall_ms: Summary,
    init_cpu_ms: Summary,
    rss_after_init_kib: u64,
    warm_wall_us: Summary,
    warm_cpu_us: Summary,
    rss_after_1k_kib: u64,
    rss_after_all_kib: u64,
    /// Remote calls per invocation, by `service:operation` (Finch: `finch:METHOD path`).
    calls_per_invocation: BTreeMap<String, f64>,
    /// Heap allocations (blocks, bytes) per warm invocation, counted by valgrind's DHAT.
    allocations: Option<(f64, f64)>,
    /// Stripped and deflated size of the function's arm64 artifact as `sam build` made it, bytes.
    #[serde(default)]
    shipped: Option<(u64, u64)>,
    failures: usize,
    /// The raw samples behind the summaries, for the plot (`target/bench/samples.json`); not
    /// part of the reference, which keeps only what the report compares.
    #[serde(skip)]
    samples: Samples,
}

/// Every init (ms) and warm invocation (µs) one binary measured, CPU and wall.
#[derive(Debug, Clone, Serialize, Default)]
struct Samples {
    init_cpu_ms: Vec<f64>,
    init_wall_ms: Vec<f64>,
    warm_cpu_us: Vec<f64>,
    warm_wall_us: Vec<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let opts = Opts::parse()?;
    std::fs::create_dir_all(&opts.out)?;
    let moto =
        std::env::var("AWS_ENDPOINT_URL").map_err(|_| "AWS_ENDPOINT_URL must point at moto (scripts/bench.sh)")?;
    let stack = TestStack::start_quiet().await;
    let aws = aws::AwsEndpoint::start(moto.clone(), stack.finch.base_url.clone()).await?;
    stack.seed(scenarios::CUSTOMER, 19).await;
    if opts.critical_path {
        let invocations = opts.invocations.min(200);
        let cp = critical_path::run(&Subject::binary(&opts, "oauth-callback"), &stack, &aws, invocations).await?;
        let json = serde_json::to_string_pretty(&cp)?;
        std::fs::write(opts.out.join("critical_path.json"), &json)?;
        println!("{json}");
        return Ok(());
    }
    if opts.cold_first {
        let cf = cold_first::run(&Subject::binary(&opts, "list-connections"), &stack, &aws, opts.spawns).await?;
        let json = serde_json::to_string_pretty(&cf)?;
        std::fs::write(opts.out.join("cold_first.json"), &json)?;
        if opts.save {
            std::fs::write(report::COLD_FIRST_REFERENCE, &json)?;
            eprintln!("saved: {}", report::COLD_FIRST_REFERENCE);
        }
        println!("{json}");
        return Ok(());
    }

    let mut results = Vec::new();
    let hello = measure(&opts, &Subject::binary(&opts, "perch-bench-hello"), None, &stack, &aws).await?;
    eprintln!("{}", line(&hello));
    results.push(hello);
    let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
    for function in scenarios::FUNCTIONS.iter().filter(|f| wanted(f)) {
        let mut scenario = scenarios::Scenario::prepare(function, &stack).await;
        let mut subject = Subject::binary(&opts, scenarios::binary(function));
        subject.name = (*function).to_owned();
        let m = measure(&opts, &subject, Some(&mut scenario), &stack, &aws).await?;
        eprintln!("{}", line(&m));
        results.push(m);
        // The emulator keeps every request it served (for tests); hundreds of thousands of them
        // are the harness's memory and time, not the next function's.
        stack.finch.shared.world().requests.clear();
    }
    // The peer does the callback's work; it gets the callback's events.
    if let Some(dir) = opts.peer.clone().filter(|_| wanted("peer-node")) {
        let peer = Subject {
            name: "peer-node-callback".into(),
            program: PathBuf::from("node"),
            args: vec![dir.join("bootstrap.mjs").display().to_string()],
            artifact: None,
        };
        let mut scenario = scenarios::Scenario::prepare("oauth-callback", &stack).await;
        let m = measure(&opts, &peer, Some(&mut scenario), &stack, &aws).await?;
        eprintln!("{}", line(&m));
        results.push(m);
    }
    let sweep = if wanted("sweep") {
        sweep::run(opts.smoke, &Subject::binary(&opts, "check-connection-status"), &stack, &aws).await?
    } else {
        Vec::new()
    };
    let synced = if wanted("sync") {
        Some(sync::run(opts.smoke, &opts.bin_dir, opts.peer.as_deref(), &moto).await?)
    } else {
        None
    };
    // `--only people`: the person index alone, without the hour-long backfill before it;
    // `--only backfill`: the backfill alone, without the index after it.
    let paid = if wanted("pay") || wanted("people") || wanted("backfill") {
        let (backfill, people) = (wanted("pay") || wanted("backfill"), wanted("pay") || wanted("people"));
        Some(pay::run(opts.smoke, &opts.bin_dir, &moto, backfill, people).await?)
    } else {
        None
    };
    let run = Results { functions: results, sweep, sync: synced, pay: paid };
    let json = serde_json::to_string_pretty(&run)?;
    std::fs::write(opts.out.join("results.json"), &json)?;
    let samples: BTreeMap<&str, &Samples> = run.functions.iter().map(|m| (m.name.as_str(), &m.samples)).collect();
    std::fs::write(opts.out.join("samples.json"), serde_json::to_vec(&samples)?)?;
    let previous: Option<Results> = std::fs::read(REFERENCE).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let command = std::env::var("PERCH_BENCH_COMMAND").unwrap_or_else(|_| "perch-bench".into());
    let md = report::markdown(&run, previous.as_ref(), &machine(), &command);
    std::fs::write(opts.out.join("report.md"), &md)?;
    println!("{md}");
    if opts.save {
        std::fs::write(REFERENCE, &json)?;
        let doc = std::fs::read_to_string("BENCHMARKS.md")?;
        let (head, rest) = doc.split_once(BEGIN).ok_or("BENCHMARKS.md has no results marker")?;
        let (_, tail) = rest.split_once(END).ok_or("BENCHMARKS.md has no end-of-results marker")?;
        std::fs::write("BENCHMARKS.md", format!("{head}{BEGIN}\n{md}\n{END}{tail}"))?;
        eprintln!("saved: {REFERENCE} and BENCHMARKS.md");
    }
    Ok(())
}

/// The saved reference run that "changes since" compares with.
const REFERENCE: &str = "bench/results.json";
const BEGIN: &str = "<!-- perch-bench results: written by scripts/bench.sh --save -->";
const END: &str = "<!-- end of perch-bench results -->";

/// CPU model, cores, kernel, load and toolchains, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let date = time::OffsetDateTime::now_utc().date();
    let tools = std::env::var("PERCH_BENCH_TOOLS").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, Linux {}, load average {} at start, {date}; {} builds (Lambda runs arm64){}",
        kernel.trim(),
        load.join(" "),
        std::env::consts::ARCH,
        if tools.is_empty() { String::new() } else { format!("; {tools}") }
    )
}

fn line(m: &Measured) -> String {
    format!(
        "{:<24} init cpu p50 {:.2} ms, wall p50 {:.2} ms | warm cpu p50 {:.0} µs, wall p50 {:.0} µs p99 {:.0} µs | rss {} / {} KiB | {:.2} MB | failures {}",
        m.name,
        m.init_cpu_ms.p50,
        m.init_wall_ms.p50,
        m.warm_cpu_us.p50,
        m.warm_wall_us.p50,
        m.warm_wall_us.p99,
        m.rss_after_init_kib,
        m.rss_after_all_kib,
        m.size as f64 / 1e6,
        m.failures
    )
}

/// The environment a function gets: what `template.yaml` sets, pointed at loopback, plus what
/// Lambda itself sets.
fn environment(stack: &TestStack, aws: &aws::AwsEndpoint, runtime_api: &str, name: &str) -> Vec<(String, String)> {
    let c = &stack.config;
    let mut env: Vec<(String, String)> = [
        ("TABLE_NAME", c.table_name.clone()),
        ("KMS_KEY_ID", c.kms_key_id.clone()),
        ("FINCH_SECRET_ID", c.finch_secret_id.clone()),
        // Finch through the same proxy, so its calls are counted with the AWS ones.
        ("FINCH_API_URL", aws.url.clone()),
        ("FINCH_REDIRECT_URI", c.redirect_uri.to_string()),
        ("APP_RETURN_URL", c.app_return_url.to_string()),
        ("SWEEP_RECHECK_SECONDS", "0".into()),
        ("SWEEP_BUDGET_REQUESTS", "1000000".into()),
        ("SWEEP_BUDGET_WINDOW_SECONDS", "1".into()),
        ("SWEEP_TIME_MARGIN_SECONDS", "0".into()),
        // The windows the sweep shares with the sync workers count real seconds (two DynamoDB
        // calls a check); 10,000 warm rounds would wait for them. They are measured with the
        // sync (`bench/src/sync.rs`, G13).
        ("SWEEP_SHARED_BUDGET", "false".into()),
        ("AWS_ENDPOINT_URL", aws.url.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        // G1 is init without network; opening the connection in init is G9's (`--cold-first`).
        ("PREWARM_CONNECTIONS", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // The synced data's table, for the functions template.yaml gives it to.
    if ["oauth-callback", "disconnect", "connection-sync", "connection-data", "sync-worker"].contains(&name) {
        env.push(("RECORDS_TABLE_NAME".into(), c.records_table_name.clone().unwrap_or_default()));
    }
    // PATH for the peer's `node`; SSL_CERT_FILE as template.yaml sets it (scripts/bench.sh
    // passes this machine's bundle).
    for k in ["PATH", "SSL_CERT_FILE"] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    env
}

fn spawn(subject: &Subject, env: &[(String, String)]) -> std::io::Result<tokio::process::Child> {
    // The functions' logs: written as on Lambda, kept only when asked (PERCH_BENCH_LOGS=dir).
    let log = || -> std::io::Result<Stdio> {
        match std::env::var_os("PERCH_BENCH_LOGS") {
            Some(dir) => {
                let path = PathBuf::from(dir).join(format!("{}.log", subject.name));
                Ok(std::fs::OpenOptions::new().create(true).append(true).open(path)?.into())
            }
            None => Ok(Stdio::null()),
        }
    };
    tokio::process::Command::new(&subject.program)
        .args(&subject.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log()?)
        .stderr(log()?)
        .kill_on_drop(true)
        .spawn()
}

async fn measure(
    opts: &Opts,
    subject: &Subject,
    mut scenario: Option<&mut scenarios::Scenario>,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<Measured, BoxError> {
    let name = subject.name.as_str();
    let mut m = Measured { name: name.to_owned(), ..Default::default() };
    if let Some(artifact) = &subject.artifact {
        let bytes = std::fs::read(artifact)
            .map_err(|e| format!("{}: {e} (build with scripts/bench.sh)", artifact.display()))?;
        (m.size, m.zipped) = (bytes.len() as u64, deflated(&bytes)?);
        let binary = artifact.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        if let Some(path) = opts.shipped.get(binary) {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            m.shipped = Some((bytes.len() as u64, deflated(&bytes)?));
        }
    }

    // Init, over fresh processes.
    let (mut walls, mut cpus, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.spawns {
        let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
        let env = environment(stack, aws, &api.addr, name);
        let started = Instant::now();
        let mut child = spawn(subject, &env)?;
        let pid = child.id().ok_or("no pid")?;
        let at = api.wait_next(Duration::from_secs(10)).await.map_err(|e| format!("{name}: {e}"))?;
        cpus.push(procfs::cpu(pid));
        rss.push(procfs::peak_rss_kib(pid));
        walls.push(at.duration_since(started));
        child.kill().await?;
    }
    m.init_wall_ms = summarize(&walls, MILLIS);
    m.init_cpu_ms = summarize(&cpus, MILLIS);
    (m.samples.init_wall_ms, m.samples.init_cpu_ms) = (values(&walls, MILLIS), values(&cpus, MILLIS));
    rss.sort_unstable();
    m.rss_after_init_kib = rss.get(rss.len() / 2).copied().unwrap_or(0);

    // Warm, in one process.
    let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
    let env = environment(stack, aws, &api.addr, name);
    let mut child = spawn(subject, &env)?;
    let pid = child.id().ok_or("no pid")?;
    api.wait_next(Duration::from_secs(10)).await?;
    // Two warm-ups through to moto; the second one's answers are what the rest replay.
    for w in 0..2 {
        aws.record();
        let event = match scenario.as_deref_mut() {
            Some(s) => s.event(stack, w).await,
            None => serde_json::json!({"hello": w}),
        };
        let (answer, _, _) = invoke(&mut api, pid, &event).await?;
        if let Some(s) = scenario.as_deref() {
            if !s.succeeded(&answer) {
                return Err(format!("{name}: warm-up {w} answered {answer}").into());
            }
            s.after(stack);
        }
    }
    aws.replay();
    aws.reset_counts();
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for i in 0..opts.invocations {
        let event = match scenario.as_deref_mut() {
            Some(s) => s.event(stack, i + 2).await,
            None => serde_json::json!({"hello": i}),
        };
        aws.next_invocation();
        let (answer, wall, cpu) = invoke(&mut api, pid, &event).await?;
        if let Some(s) = scenario.as_deref() {
            if !s.succeeded(&answer) {
                m.failures += 1;
                if m.failures == 1 {
                    eprintln!("{name}: invocation {i} answered {answer}");
                }
            }
            s.after(stack);
        }
        walls.push(wall);
        cpus.push(cpu);
        if i + 1 == 1000.min(opts.invocations) {
            m.rss_after_1k_kib = procfs::peak_rss_kib(pid);
        }
    }
    m.rss_after_all_kib = procfs::peak_rss_kib(pid);
    m.warm_wall_us = summarize(&walls, MICROS);
    m.warm_cpu_us = summarize(&cpus, MICROS);
    (m.samples.warm_wall_us, m.samples.warm_cpu_us) = (values(&walls, MICROS), values(&cpus, MICROS));
    let (counts, misses) = aws.counts();
    if misses > 0 {
        return Err(format!("{name}: {misses} AWS requests had no recorded answer: the warm path is not stable").into());
    }
    let n = opts.invocations.max(1) as f64;
    m.calls_per_invocation = counts.into_iter().map(|(k, v)| (k, v as f64 / n)).collect();
    child.kill().await?;
    if opts.callgrind && subject.artifact.is_some() {
        profile(opts, subject, scenario.as_deref_mut(), stack, aws).await?;
    }
    if opts.allocations && subject.artifact.is_some() {
        m.allocations = Some(allocations(opts, subject, scenario, stack, aws).await?);
    }
    Ok(m)
}

/// Heap allocations per warm invocation: the same warm path under valgrind's DHAT, once with
/// only the warm-ups and once with `ALLOC_RUNS` more invocations; the difference, divided.
async fn allocations(
    opts: &Opts,
    subject: &Subject,
    mut scenario: Option<&mut scenarios::Scenario>,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<(f64, f64), BoxError> {
    const ALLOC_RUNS: usize = 50;
    let mut totals = Vec::new();
    for measured in [0, ALLOC_RUNS] {
        let out = opts.out.join(format!("dhat-{}-{measured}.txt", subject.name));
        let tool = ["--tool=dhat".to_owned(), "--dhat-out-file=/dev/null".to_owned()];
        under_valgrind(&tool, &out, measured, subject, scenario.as_deref_mut(), stack, aws).await?;
        let report = std::fs::read_to_string(&out)?;
        // `==123== Total:     58,161 bytes in 123 blocks`
        let total = report
            .lines()
            .find_map(|l| l.split("Total:").nth(1))
            .ok_or_else(|| format!("no DHAT total in {}", out.display()))?;
        let numbers: Vec<f64> =
            total.split_whitespace().filter_map(|w| w.replace(',', "").parse::<f64>().ok()).collect();
        let [bytes, blocks] = numbers[..] else { return Err(format!("odd DHAT total: {total}").into()) };
        totals.push((blocks, bytes));
    }
    let per = ALLOC_RUNS as f64;
    Ok(((totals[1].0 - totals[0].0) / per, (totals[1].1 - totals[0].1) / per))
}

/// `--callgrind`: instruction profiles of the warm path, for finding where its CPU goes (run
/// it on a build with symbols, `--bin-dir`). Two profiles, after the warm-ups only and after
/// `PROFILE_RUNS` more invocations; `callgrind_annotate --inclusive=yes` on each, and the
/// difference divided by `PROFILE_RUNS` is one invocation. Instruction counts do not move with
/// the machine's other load.
async fn profile(
    opts: &Opts,
    subject: &Subject,
    mut scenario: Option<&mut scenarios::Scenario>,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<(), BoxError> {
    const PROFILE_RUNS: usize = 200;
    for measured in [0, PROFILE_RUNS] {
        let file = opts.out.join(format!("callgrind-{}-{measured}.out", subject.name));
        let tool = ["--tool=callgrind".to_owned(), format!("--callgrind-out-file={}", file.display())];
        let log = opts.out.join(format!("callgrind-{}-{measured}.log", subject.name));
        under_valgrind(&tool, &log, measured, subject, scenario.as_deref_mut(), stack, aws).await?;
        eprintln!("profile: {}", file.display());
    }
    Ok(())
}

/// Runs `subject` under valgrind with `tool` for the two recorded warm-ups and `measured`
/// replayed invocations, then ends it with SIGTERM (valgrind writes its report as the process
/// ends); valgrind's own output goes to `log`.
async fn under_valgrind(
    tool: &[String],
    log: &Path,
    measured: usize,
    subject: &Subject,
    mut scenario: Option<&mut scenarios::Scenario>,
    stack: &TestStack,
    aws: &aws::AwsEndpoint,
) -> Result<(), BoxError> {
    let mut args = tool.to_vec();
    args.push(subject.program.display().to_string());
    let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
    let env = environment(stack, aws, &api.addr, &subject.name);
    let mut child = tokio::process::Command::new("valgrind")
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    api.wait_next(Duration::from_secs(60)).await?;
    for i in 0..2 + measured {
        if i < 2 {
            aws.record();
        } else if i == 2 {
            aws.replay();
        }
        aws.next_invocation();
        let event = match scenario.as_deref_mut() {
            Some(s) => s.event(stack, i).await,
            None => serde_json::json!({"hello": i}),
        };
        let (answer, _, _) = invoke(&mut api, pid, &event).await?;
        if let Some(s) = scenario.as_deref() {
            if !s.succeeded(&answer) {
                return Err(format!("{} under valgrind: invocation {i} answered {answer}", subject.name).into());
            }
            s.after(stack);
        }
    }
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    child.wait().await?;
    Ok(())
}

/// One invocation: the answer, the wall time until it arrived, and the CPU time of the whole
/// loop turn (until the function asked for its next event).
async fn invoke(
    api: &mut runtime_api::RuntimeApi,
    pid: u32,
    event: &Value,
) -> Result<(Value, Duration, Duration), BoxError> {
    invoke_within(api, pid, event, Duration::from_secs(30)).await
}

/// [`invoke`], waiting up to `limit` for the answer (a sweep of a million connections takes
/// minutes).
async fn invoke_within(
    api: &mut runtime_api::RuntimeApi,
    pid: u32,
    event: &Value,
    limit: Duration,
) -> Result<(Value, Duration, Duration), BoxError> {
    let body = axum::body::Bytes::from(serde_json::to_vec(event)?);
    let cpu_before = procfs::cpu(pid);
    let sent = api.deliver(body).await;
    let (at, ok, answer) = api.wait_response(limit).await?;
    api.wait_next(Duration::from_secs(30)).await?;
    let cpu = procfs::cpu(pid).saturating_sub(cpu_before);
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !ok {
        return Err(format!("the function reported an error: {answer}").into());
    }
    Ok((answer, at.duration_since(sent), cpu))
}

/// `sam build`'s artifacts in `dir`, by binary: `<dir>/<LogicalId>/bootstrap` for every function
/// of `template.yaml`. Checked here, before any measuring, so a missing one fails the run at once.
fn shipped_artifacts(dir: &Path) -> Result<BTreeMap<String, PathBuf>, BoxError> {
    let template = std::fs::read_to_string("template.yaml")?;
    let mut artifacts = BTreeMap::new();
    for (binary, id) in binaries(&template)? {
        let path = dir.join(id).join("bootstrap");
        if !path.is_file() {
            return Err(format!("{}: missing (run scripts/build-lambdas.sh)", path.display()).into());
        }
        artifacts.insert(binary.to_owned(), path);
    }
    Ok(artifacts)
}

/// (binary, logical id) of every function whose build properties name a `Binary`.
fn binaries(template: &str) -> Result<Vec<(&str, &str)>, BoxError> {
    let mut resource = None;
    let mut out = Vec::new();
    for line in template.lines() {
        // Resources are the two-space-indented keys under `Resources:`.
        if let Some(id) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !id.starts_with(' ')
        {
            resource = Some(id);
        }
        if let Some(binary) = line.trim().strip_prefix("Binary: ") {
            out.push((binary, resource.ok_or("template.yaml: a Binary outside any resource")?));
        }
    }
    Ok(out)
}

/// The size of `bytes` deflated at level 9, as a zip archive would store them.
fn deflated(bytes: &[u8]) -> std::io::Result<u64> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes)?;
    Ok(e.finish()?.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_binary_is_paired_with_the_resource_whose_build_names_it() {
        let template = "Resources:\n  ListConnectionsFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildProperties:\n        Binary: list-connections\n  OauthCallbackFunction:\n    Metadata:\n      BuildProperties:\n        Binary: oauth-callback\n";
        assert_eq!(
            binaries(template).ok(),
            Some(vec![("list-connections", "ListConnectionsFunction"), ("oauth-callback", "OauthCallbackFunction")])
        );
    }

    #[test]
    fn every_function_of_the_real_template_has_an_artifact_name() {
        let template = include_str!("../../template.yaml");
        let shipped = binaries(template).unwrap_or_default();
        for binary in scenarios::FUNCTIONS.iter().map(|f| scenarios::binary(f)) {
            assert!(shipped.iter().any(|(b, _)| *b == binary), "{binary} is not in template.yaml");
        }
    }
}
