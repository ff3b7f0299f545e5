//! G9: the first request after a cold start (PERFORMANCE.md), with TLS on the loopback.
//!
//! Everywhere else the harness speaks plain HTTP to its AWS stand-in, so a first request costs
//! what a warm one does plus a TCP connect. On AWS it also pays a TLS handshake: key exchange
//! (X25519MLKEM768 with aws-lc-rs), the server's certificate chain verified against Amazon's
//! roots. Here the stand-in is put behind a TLS front ([`TlsFront`]) with a certificate
//! authority made for the run (RSA 2048, as AWS endpoints' certificates are), and the function is
//! a `bench-tls` build, the only kind that trusts such an authority (`perch::config::bench_ca`;
//! `scripts/bench.sh --cold-first` builds it into a target directory of its own).
//!
//! Per variant — plain HTTP without the pre-warm (what a first request costs besides TLS), then
//! TLS with `PREWARM_CONNECTIONS=false` (connect on first use) and `true` (connect in init,
//! `perch::runtime`) — and per fresh process: init (exec → first `GET /next`, wall and CPU),
//! the first invocation, then [`WARM`] more, each answered from the recording (no moto latency)
//! by the same stand-in. The front counts handshakes, so the report shows where each
//! connection was opened: in init, or on the first request. Target: first ≤ 2 × warm (p50).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use perch_tests::TestStack;
use serde::Serialize;

use crate::aws::AwsEndpoint;
use crate::stats::{Summary, summarize};
use crate::{BoxError, MILLIS, Subject, environment, invoke, procfs, runtime_api, scenarios, spawn};

/// Warm invocations after the first, per process.
const WARM: usize = 20;

/// A TLS endpoint on the loopback in front of the harness's plain-HTTP stand-in.
pub struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The authority that signed its certificate (PEM), for `PERCH_BENCH_CA_PEM`.
    pub ca_pem: String,
    handshakes: Arc<AtomicU64>,
}

impl TlsFront {
    /// Serves TLS on a free port, forwarding each connection's bytes to `behind` (host:port).
    pub async fn start(behind: String) -> Result<Self, BoxError> {
        let (ca_pem, config) = certificates()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let handshakes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&handshakes);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, behind, counted) = (acceptor.clone(), behind.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    // Without it, Nagle's algorithm and delayed ACKs hold small writes for
                    // 40 ms now and then: the front's, not the function's, time.
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&behind).await else { return };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(Self { url, ca_pem, handshakes })
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// A fresh authority and a certificate it signed for `127.0.0.1` and `localhost`; the server
/// sends the leaf, the client holds the root, as with AWS (which also sends an intermediate).
fn certificates() -> Result<(String, rustls::ServerConfig), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "perch-bench loopback CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)?;
    Ok((ca_cert.pem(), config))
}

/// One variant's figures, over its fresh processes.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Whether AWS was reached through the TLS front (else over plain HTTP, as elsewhere).
    pub tls: bool,
    pub prewarm: bool,
    pub init_wall_ms: Summary,
    pub init_cpu_ms: Summary,
    pub first_wall_ms: Summary,
    pub first_cpu_ms: Summary,
    pub warm_wall_ms: Summary,
    pub warm_cpu_ms: Summary,
    /// First-invocation wall time over warm wall time, at the median.
    pub ratio_p50: f64,
    /// TLS handshakes per process during init, and during the first invocation.
    pub handshakes_in_init: f64,
    pub handshakes_in_first: f64,
    /// Remote calls per process during init, by operation.
    pub init_calls: std::collections::BTreeMap<String, f64>,
    pub failures: usize,
}

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ColdFirst {
    pub binary: String,
    pub scenario: &'static str,
    pub processes: usize,
    pub warm_per_process: usize,
    pub variants: Vec<Variant>,
    /// What opening the connection adds to a first request, without the pre-warm: first minus
    /// warm CPU at the median (TLS handshake with aws-lc-rs, TCP connect, first-use work).
    pub first_request_extra_cpu_ms: f64,
    /// The part of it TLS accounts for: the same difference over plain HTTP taken away (the
    /// handshake with aws-lc-rs, the only crypto provider in the build, and the TLS stack's
    /// own first use).
    pub first_handshake_cpu_ms: f64,
    /// What the pre-warm adds to init, at the median (wall, CPU).
    pub prewarm_init_wall_ms: f64,
    pub prewarm_init_cpu_ms: f64,
}

/// Runs `processes` fresh processes of `subject` (a `bench-tls` build of `list-connections`)
/// per variant.
pub async fn run(
    subject: &Subject,
    stack: &TestStack,
    aws: &AwsEndpoint,
    processes: usize,
) -> Result<ColdFirst, BoxError> {
    let behind = aws.url.trim_start_matches("http://").to_owned();
    let front = TlsFront::start(behind).await?;
    let mut scenario = scenarios::Scenario::prepare(scenarios::LIST_ONE, stack).await;
    let event = scenario.event(stack, 0).await;

    // One process through to moto, pre-warming: its answers (init's and two invocations') are
    // what every later process is answered from.
    aws.record();
    let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
    let mut child = spawn(subject, &env(stack, aws, &api.addr, subject, Some(&front), true))?;
    let pid = child.id().ok_or("no pid")?;
    api.wait_next(Duration::from_secs(10)).await.map_err(|e| format!("{}: {e} (a bench-tls build?)", subject.name))?;
    for _ in 0..2 {
        let (answer, _, _) = invoke(&mut api, pid, &event).await?;
        if !scenario.succeeded(&answer) {
            return Err(format!("cold first: the recorded invocation answered {answer}").into());
        }
    }
    child.kill().await?;
    aws.replay();

    // Plain HTTP first, without the pre-warm: what a first request costs besides TLS (the SDK's
    // own first-call work); then TLS without and with it.
    let mut variants = Vec::new();
    for (tls, prewarm) in [(false, false), (true, false), (true, true)] {
        let front = tls.then_some(&front);
        variants.push(variant(subject, stack, aws, front, &scenario, &event, processes, prewarm).await?);
    }
    let (plain, off, on) = (&variants[0], &variants[1], &variants[2]);
    Ok(ColdFirst {
        binary: subject.program.display().to_string(),
        scenario: scenarios::LIST_ONE,
        processes,
        warm_per_process: WARM,
        first_request_extra_cpu_ms: off.first_cpu_ms.p50 - off.warm_cpu_ms.p50,
        first_handshake_cpu_ms: (off.first_cpu_ms.p50 - off.warm_cpu_ms.p50)
            - (plain.first_cpu_ms.p50 - plain.warm_cpu_ms.p50),
        prewarm_init_wall_ms: on.init_wall_ms.p50 - off.init_wall_ms.p50,
        prewarm_init_cpu_ms: on.init_cpu_ms.p50 - off.init_cpu_ms.p50,
        variants,
    })
}

#[allow(clippy::too_many_arguments)]
async fn variant(
    subject: &Subject,
    stack: &TestStack,
    aws: &AwsEndpoint,
    front: Option<&TlsFront>,
    scenario: &scenarios::Scenario,
    event: &serde_json::Value,
    processes: usize,
    prewarm: bool,
) -> Result<Variant, BoxError> {
    let (mut init_walls, mut init_cpus, mut first_walls, mut first_cpus) = (vec![], vec![], vec![], vec![]);
    let (mut warm_walls, mut warm_cpus) = (vec![], vec![]);
    let (mut in_init, mut in_first, mut failures, mut misses) = (0, 0, 0, 0);
    let mut init_counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for _ in 0..processes {
        let mut api = runtime_api::RuntimeApi::start(Duration::from_secs(30)).await?;
        let env = env(stack, aws, &api.addr, subject, front, prewarm);
        let handshakes = || front.map_or(0, TlsFront::handshakes);
        let before = handshakes();
        aws.next_invocation();
        aws.reset_counts();
        let started = Instant::now();
        let mut child = spawn(subject, &env)?;
        let pid = child.id().ok_or("no pid")?;
        let at = api.wait_next(Duration::from_secs(10)).await?;
        init_walls.push(at.duration_since(started));
        init_cpus.push(procfs::cpu(pid));
        let after_init = handshakes();
        for (k, v) in aws.counts().0 {
            *init_counts.entry(k).or_default() += v;
        }
        aws.next_invocation();
        let (answer, wall, cpu) = invoke(&mut api, pid, event).await?;
        failures += usize::from(!scenario.succeeded(&answer));
        first_walls.push(wall);
        first_cpus.push(cpu);
        in_init += after_init - before;
        in_first += handshakes() - after_init;
        for _ in 0..WARM {
            aws.next_invocation();
            let (answer, wall, cpu) = invoke(&mut api, pid, event).await?;
            failures += usize::from(!scenario.succeeded(&answer));
            warm_walls.push(wall);
            warm_cpus.push(cpu);
        }
        child.kill().await?;
        misses += aws.counts().1;
    }
    if misses > 0 {
        return Err("cold first: a request had no recorded answer".into());
    }
    let n = processes.max(1) as f64;
    let (first_wall_ms, warm_wall_ms) = (summarize(&first_walls, MILLIS), summarize(&warm_walls, MILLIS));
    Ok(Variant {
        tls: front.is_some(),
        prewarm,
        init_wall_ms: summarize(&init_walls, MILLIS),
        init_cpu_ms: summarize(&init_cpus, MILLIS),
        ratio_p50: first_wall_ms.p50 / warm_wall_ms.p50,
        first_wall_ms,
        first_cpu_ms: summarize(&first_cpus, MILLIS),
        warm_wall_ms,
        warm_cpu_ms: summarize(&warm_cpus, MILLIS),
        handshakes_in_init: in_init as f64 / n,
        handshakes_in_first: in_first as f64 / n,
        init_calls: init_counts.into_iter().map(|(k, v)| (k, v as f64 / n)).collect(),
        failures,
    })
}

/// The function's environment; with a front, AWS and Finch behind it, trusting its authority.
fn env(
    stack: &TestStack,
    aws: &AwsEndpoint,
    runtime_api: &str,
    subject: &Subject,
    front: Option<&TlsFront>,
    prewarm: bool,
) -> Vec<(String, String)> {
    let mut env = environment(stack, aws, runtime_api, &subject.name);
    if let Some(front) = front {
        for (k, v) in &mut env {
            if k == "AWS_ENDPOINT_URL" || k == "FINCH_API_URL" {
                v.clone_from(&front.url);
            }
        }
        env.push(("PERCH_BENCH_CA_PEM".into(), front.ca_pem.clone()));
    }
    for (k, v) in &mut env {
        if k == "PREWARM_CONNECTIONS" {
            *v = prewarm.to_string();
        }
    }
    env
}
