//! The results as Markdown: the tables of `BENCHMARKS.md`, the targets of PERFORMANCE.md §9
//! with what was measured, and what changed since the previous saved run.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::{Measured, Results};

const HELLO: &str = "perch-bench-hello";
const PEER: &str = "peer-node-callback";

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn find<'a>(r: &'a Results, name: &str) -> Option<&'a Measured> {
    r.functions.iter().find(|m| m.name == name)
}

/// The service of an `x-amz-target` (or `finch:…`).
fn service(key: &str) -> &'static str {
    match key {
        k if k.starts_with("DynamoDB") => "DynamoDB",
        k if k.starts_with("TrentService") => "KMS",
        k if k.starts_with("secretsmanager") => "Secrets Manager",
        k if k.starts_with("AWSEvents") => "EventBridge",
        k if k.starts_with("AmazonSQS") => "SQS",
        k if k.starts_with("finch:") => "Finch",
        _ => "other",
    }
}

const SERVICES: &[&str] = &["DynamoDB", "KMS", "Secrets Manager", "EventBridge", "SQS", "Finch"];

fn calls_by_service(m: &Measured) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in &m.calls_per_invocation {
        *out.entry(service(k)).or_default() += v;
    }
    out
}

pub fn markdown(r: &Results, previous: Option<&Results>, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let hello = find(r, HELLO);
    let hello_cpu = hello.map_or(0.0, |h| h.init_cpu_ms.p50);
    let _ = writeln!(s, "Machine: {machine}  \nCommand: `{command}`\n");

    let spawns = r.functions.first().map_or(0, |m| m.init_cpu_ms.n);
    let invocations = r.functions.first().map_or(0, |m| m.warm_cpu_us.n);
    let _ = writeln!(s, "### Functions\n");
    let _ = writeln!(
        s,
        "Init over {spawns} spawns (exec → first `/next`); warm over {invocations} invocations (CPU: the whole loop turn; wall: event handed over → answer received). RSS is peak (`VmHWM`).\n"
    );
    let _ = writeln!(
        s,
        "| binary | init CPU p50 (max) | × hello | init wall p50 | RSS after init | warm CPU p50 / p99 | warm wall p50 / p99 | RSS after 1k / all | stripped / zipped | arm64 shipped |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for m in &r.functions {
        let size = if m.size > 0 {
            format!("{:.2} / {:.2} MB", m.size as f64 / 1e6, m.zipped as f64 / 1e6)
        } else {
            "—".into()
        };
        let arm64 =
            m.shipped.map_or("—".into(), |(b, z)| format!("{:.2} / {:.2} MB", b as f64 / 1e6, z as f64 / 1e6));
        let ratio = if hello_cpu > 0.0 { m.init_cpu_ms.p50 / hello_cpu } else { 0.0 };
        let _ = writeln!(
            s,
            "| {} | {:.2} ms ({:.2}) | {:.1}× | {:.2} ms | {:.1} MB | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.1} / {:.1} MB | {} | {arm64} |",
            m.name,
            m.init_cpu_ms.p50,
            m.init_cpu_ms.max,
            ratio,
            m.init_wall_ms.p50,
            mb(m.rss_after_init_kib),
            m.warm_cpu_us.p50,
            m.warm_cpu_us.p99,
            m.warm_wall_us.p50,
            m.warm_wall_us.p99,
            mb(m.rss_after_1k_kib),
            mb(m.rss_after_all_kib),
            size
        );
    }

    let _ = writeln!(s, "\n### Remote calls and allocations per warm invocation\n");
    let _ = writeln!(s, "| binary | {} | heap allocations |", SERVICES.join(" | "));
    let _ = writeln!(s, "|---|{}---|", "---|".repeat(SERVICES.len()));
    for m in r.functions.iter().filter(|m| m.name != HELLO) {
        let by = calls_by_service(m);
        let cells: Vec<String> = SERVICES.iter().map(|k| format!("{:.2}", by.get(k).copied().unwrap_or(0.0))).collect();
        let allocs = m.allocations.map_or("—".into(), |(n, b)| format!("{n:.0} ({:.1} KB)", b / 1e3));
        let _ = writeln!(s, "| {} | {} | {allocs} |", m.name, cells.join(" | "));
    }
    if let Some((n, _)) = find(r, HELLO).and_then(|h| h.allocations) {
        let _ = writeln!(s, "\nThe hello-world baseline's loop turn allocates {n:.0} blocks.");
    }

    if let (Some(perch), Some(peer)) = (find(r, "oauth-callback"), find(r, PEER)) {
        let _ = writeln!(s, "\n### The callback against the Node.js peer\n");
        let _ = writeln!(s, "| | Perch `oauth-callback` | Node.js peer | Perch / peer |");
        let _ = writeln!(s, "|---|---|---|---|");
        let rows = [
            ("init CPU p50", perch.init_cpu_ms.p50, peer.init_cpu_ms.p50, "ms"),
            ("init wall p50", perch.init_wall_ms.p50, peer.init_wall_ms.p50, "ms"),
            ("warm CPU p50", perch.warm_cpu_us.p50, peer.warm_cpu_us.p50, "µs"),
            ("warm wall p50", perch.warm_wall_us.p50, peer.warm_wall_us.p50, "µs"),
            ("RSS after init", mb(perch.rss_after_init_kib), mb(peer.rss_after_init_kib), "MB"),
            ("RSS after all", mb(perch.rss_after_all_kib), mb(peer.rss_after_all_kib), "MB"),
        ];
        for (what, a, b, unit) in rows {
            let _ =
                writeln!(s, "| {what} | {a:.2} {unit} | {b:.2} {unit} | {:.3} |", if b > 0.0 { a / b } else { 0.0 });
        }
    }

    if !r.sweep.is_empty() {
        let _ = writeln!(s, "\n### The status sweep\n");
        let _ = writeln!(
            s,
            "| run | connections | in flight | time | checks/s | CPU per check | peak RSS | Finch requests | 429s | share of budget |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for w in &r.sweep {
            let share = w
                .budget_share
                .map_or("—".into(), |x| format!("{:.0} % of {:.0}/s", x * 100.0, w.budget_per_second.unwrap_or(0.0)));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} s | {:.0} | {:.0} µs | {:.1} MB | {} | {} | {} |",
                w.label,
                w.connections,
                w.in_flight,
                w.seconds,
                w.checks_per_second,
                w.cpu_seconds * 1e6 / w.connections.max(1) as f64,
                mb(w.peak_rss_kib),
                w.finch_requests,
                w.rate_limited,
                share
            );
        }
    }

    if let Some(sync) = &r.sync {
        sync_tables(&mut s, sync);
    }
    if let Some(pay) = &r.pay {
        pay_tables(&mut s, pay);
    }

    let _ = writeln!(s, "\n### Targets (PERFORMANCE.md §9)\n");
    let _ = writeln!(s, "| goal | target | measured | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    let sync_goals = r.sync.as_ref().map(sync_targets).unwrap_or_default();
    for (goal, target, measured, met) in targets(r).into_iter().chain(sync_goals) {
        let _ = writeln!(s, "| {goal} | {target} | {measured} | {} |", if met { "yes" } else { "**no**" });
    }
    let _ = writeln!(s, "{}", g9_row());
    let (flavours, all_current_thread) = runtime_flavours();
    let _ = writeln!(
        s,
        "| G10 runtime shape | `current_thread` Tokio runtime in every function | {flavours} | {} |",
        if all_current_thread { "yes" } else { "**no**" }
    );

    if let Some(p) = previous {
        let _ = writeln!(s, "\n### Changes since the previous saved run\n");
        let _ = writeln!(s, "| binary | init CPU p50 | warm CPU p50 | RSS after all | stripped |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for m in &r.functions {
            if let Some(o) = find(p, &m.name) {
                let d =
                    |a: f64, b: f64| if b > 0.0 { format!("{:+.0} %", (a / b - 1.0) * 100.0) } else { "—".into() };
                let _ = writeln!(
                    s,
                    "| {} | {:.2} → {:.2} ms ({}) | {:.0} → {:.0} µs ({}) | {:.1} → {:.1} MB ({}) | {:.2} → {:.2} MB ({}) |",
                    m.name,
                    o.init_cpu_ms.p50,
                    m.init_cpu_ms.p50,
                    d(m.init_cpu_ms.p50, o.init_cpu_ms.p50),
                    o.warm_cpu_us.p50,
                    m.warm_cpu_us.p50,
                    d(m.warm_cpu_us.p50, o.warm_cpu_us.p50),
                    mb(o.rss_after_all_kib),
                    mb(m.rss_after_all_kib),
                    d(m.rss_after_all_kib as f64, o.rss_after_all_kib as f64),
                    o.size as f64 / 1e6,
                    m.size as f64 / 1e6,
                    d(m.size as f64, o.size as f64),
                );
            }
        }
    }
    s
}

/// G9's row, from the saved `--cold-first` run (`bench/cold_first.json`): it needs a build of
/// its own, so a full run does not measure it.
fn g9_row() -> String {
    let saved: Option<serde_json::Value> =
        std::fs::read(COLD_FIRST_REFERENCE).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let target = "| G9 first request after cold start (TLS on the loopback) | ≤ 2× warm with a pre-warmed connection";
    let Some(cf) = saved else {
        return format!("{target} | not measured: run `scripts/bench.sh --cold-first --save` | — |");
    };
    let variant = |prewarm: bool| {
        cf["variants"].as_array().and_then(|v| v.iter().find(|x| x["tls"] == true && x["prewarm"] == prewarm))
    };
    let (Some(on), Some(off)) = (variant(true), variant(false)) else {
        return format!(
            "{target} | {COLD_FIRST_REFERENCE} is unreadable: run `scripts/bench.sh --cold-first --save` | — |"
        );
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ratio = f(on, "ratio_p50");
    format!(
        "{target} | first / warm wall p50: {ratio:.2}× pre-warmed ({:.2} vs {:.2} ms), {:.2}× without; pre-warm adds {:.2} ms \
         to init ({COLD_FIRST_REFERENCE}) | {} |",
        f(&on["first_wall_ms"], "p50"),
        f(&on["warm_wall_ms"], "p50"),
        f(off, "ratio_p50"),
        f(&cf, "prewarm_init_wall_ms"),
        if ratio <= 2.0 { "yes" } else { "**no**" }
    )
}

/// CPU milliseconds per 1,000 records.
fn per_1k(cpu_seconds: f64, records: u64) -> f64 {
    cpu_seconds * 1e6 / records.max(1) as f64
}

fn sync_tables(s: &mut String, sync: &crate::sync::SyncResults) {
    let _ = writeln!(s, "\n### Perch Sync: one connection's full sync\n");
    let _ = writeln!(
        s,
        "| who | people | Finch calls (minimum) | by call | AWS calls | records | invocations | time | CPU | CPU per 1,000 records | peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for f in &sync.full {
        let by: Vec<String> = f.finch_calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let aws: u64 = f.aws_calls.values().sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {} | {aws} | {} | {} | {:.1} s | {:.2} s | {:.1} ms | {:.1} MB |",
            f.label,
            f.employees,
            f.finch_total,
            f.minimum,
            by.join(", "),
            f.records,
            f.invocations,
            f.seconds,
            f.cpu_seconds,
            per_1k(f.cpu_seconds, f.records),
            mb(f.peak_rss_kib)
        );
    }
    if let [perch, peer, ..] = &sync.full[..] {
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
        let _ = writeln!(
            s,
            "\nThe peer against Perch: {:.1}× the Finch calls, {:.1}× the CPU, {:.1}× the peak RSS.",
            ratio(perch.finch_total as f64, peer.finch_total as f64),
            ratio(perch.cpu_seconds, peer.cpu_seconds),
            ratio(perch.peak_rss_kib as f64, peer.peak_rss_kib as f64)
        );
    }
    if !sync.served.is_empty() {
        let _ = writeln!(s, "\n### Perch Sync: serving it (`connection-data`)\n");
        let _ = writeln!(s, "| route | records | pages | time | CPU | CPU per 1,000 records | peak RSS |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for v in &sync.served {
            let _ = writeln!(
                s,
                "| `GET /connections/{{id}}/{}` | {} | {} | {:.1} s | {:.2} s | {:.1} ms | {:.1} MB |",
                v.route,
                v.records,
                v.pages,
                v.seconds,
                v.cpu_seconds,
                per_1k(v.cpu_seconds, v.records),
                mb(v.peak_rss_kib)
            );
        }
    }
    if let Some(c) = &sync.compliance {
        let _ = writeln!(s, "\n### Perch Sync: many connections within Finch's limits\n");
        let _ = writeln!(
            s,
            "| connections | workers | Finch's product window (time ×{:.0}) | time | requests by product | 429s | share of each product's budget | connections current | CPU | peak RSS per worker |",
            60.0 / c.product_window_s.max(1.0)
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        let requests: Vec<String> = c.requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let shares: Vec<String> = c.budget_share.iter().map(|(k, v)| format!("{k} {:.0} %", v * 100.0)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} per {:.0} s | {:.0} s | {} | {} | {} | {} | {:.2} s | {:.1} MB |",
            c.connections,
            c.workers,
            c.product_limit,
            c.product_window_s,
            c.seconds,
            requests.join(", "),
            c.rate_limited,
            shares.join(", "),
            c.current,
            c.cpu_seconds,
            mb(c.peak_rss_kib)
        );
    }
}

fn pay_tables(s: &mut String, pay: &crate::pay::PayResults) {
    if let Some(b) = &pay.backfill {
        let _ = writeln!(s, "\n### Perch Sync: a pay backfill\n");
        let _ = writeln!(
            s,
            "| people | payments | statements | Finch calls by call | minimum (organization + listing + statements) | time (×{:.0} compressed) | Finch's bound (its minimum at 12 a window; Perch's calls at its 9) | 429s | invocations | CPU | CPU per 1,000 statements | peak RSS |",
            60.0 / b.window_s.max(1.0)
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let by: Vec<String> = b.finch_calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} + {} + {} | {:.0} s | {:.0} s; {:.0} s | {} | {} | {:.2} s | {:.2} ms | {:.1} MB |",
            b.employees,
            b.payments,
            b.statements,
            by.join(", "),
            b.minimum_org,
            b.minimum_listing,
            b.minimum_statements,
            b.seconds,
            b.bound_seconds,
            b.routine_bound_seconds,
            b.rate_limited,
            b.invocations,
            b.cpu_seconds,
            per_1k(b.cpu_seconds, b.statements),
            mb(b.peak_rss_kib)
        );
    }
    if let Some(r) = &pay.reconciliation {
        let _ = writeln!(s, "\n### People across connections: the index from scratch\n");
        let _ = writeln!(
            s,
            "| connections | sources | humans | persons | precision (pairs) | recall where a key exists (pairs) | ambiguities | time | CPU | peak RSS |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} % ({} of {}) | {:.2} % ({} of {}) | {} | {:.0} s | {:.2} s | {:.1} MB |",
            r.connections,
            r.sources,
            r.humans,
            r.persons,
            r.precision() * 100.0,
            r.correct_pairs,
            r.linked_pairs,
            r.recall() * 100.0,
            r.keyed_found,
            r.keyed_pairs,
            r.ambiguities,
            r.seconds,
            r.cpu_seconds,
            mb(r.peak_rss_kib)
        );
    }
}

/// G12–G15 from the sync runs.
fn sync_targets(sync: &crate::sync::SyncResults) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    let perch = sync.full.iter().find(|f| f.label.starts_with("perch"));
    let peer = sync.full.iter().find(|f| f.label.starts_with("peer"));
    if let Some(f) = perch {
        out.push((
            "G12 Finch calls for a full sync".into(),
            "= the minimum the caps allow".into(),
            format!("{} calls for {} people; minimum {}", f.finch_total, f.employees, f.minimum),
            f.finch_total == f.minimum,
        ));
    }
    if let Some(c) = &sync.compliance {
        let least = c.budget_share.values().copied().fold(f64::INFINITY, f64::min);
        let least = if least.is_finite() { least } else { 0.0 };
        out.push((
            "G13 sync compliance".into(),
            "0 × 429, ≥ 90 % of each per-product budget".into(),
            format!(
                "{} × 429; least-used product {:.0} % ({} connections, {} workers, time ×{:.0}); {} of {} current",
                c.rate_limited,
                least * 100.0,
                c.connections,
                c.workers,
                60.0 / c.product_window_s.max(1.0),
                c.current,
                c.connections
            ),
            c.rate_limited == 0 && least >= 0.9 && c.current == c.connections,
        ));
    }
    if let Some(f) = perch {
        out.push((
            "G14 sync memory".into(),
            "peak RSS ≤ 64 MB syncing a 20,000-employee company".into(),
            format!("{:.1} MB syncing {} people", mb(f.peak_rss_kib), f.employees),
            mb(f.peak_rss_kib) <= 64.0 && f.employees >= 20_000,
        ));
    }
    if let (Some(a), Some(b)) = (perch, peer) {
        let cpu = if a.cpu_seconds > 0.0 { b.cpu_seconds / a.cpu_seconds } else { 0.0 };
        let rss = if a.peak_rss_kib > 0 { b.peak_rss_kib as f64 / a.peak_rss_kib as f64 } else { 0.0 };
        out.push((
            "G15 sync against the Node.js peer".into(),
            "fewer Finch calls; ≥ 5× less CPU and RSS".into(),
            format!("{} vs {} Finch calls; peer {cpu:.1}× the CPU, {rss:.1}× the RSS", a.finch_total, b.finch_total),
            a.finch_total < b.finch_total && cpu >= 5.0 && rss >= 5.0,
        ));
    }
    out
}

/// Where `scripts/bench.sh --cold-first --save` keeps its figures.
pub const COLD_FIRST_REFERENCE: &str = "bench/cold_first.json";

/// (goal, target, measured, met) for the goals this run measures.
fn targets(r: &Results) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    let functions: Vec<&Measured> = r.functions.iter().filter(|m| m.name != HELLO && m.name != PEER).collect();
    if functions.is_empty() {
        return out;
    }
    let worst = |f: &dyn Fn(&Measured) -> f64| -> (f64, String) {
        functions
            .iter()
            .map(|m| (f(m), m.name.clone()))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((0.0, String::new()))
    };
    let hello = find(r, HELLO).map_or(1.0, |h| h.init_cpu_ms.p50.max(f64::MIN_POSITIVE));
    let (p50, who) = worst(&|m| m.init_cpu_ms.p50);
    let (max, who_max) = worst(&|m| m.init_cpu_ms.max);
    out.push((
        "G1 init CPU".into(),
        "≤ 4 ms p50, ≤ 5 ms max, ≤ 2.5× hello".into(),
        format!("worst p50 {p50:.2} ms ({who}), {:.1}× hello; worst max {max:.2} ms ({who_max})", p50 / hello),
        p50 <= 4.0 && max <= 5.0 && p50 / hello <= 2.5,
    ));
    if let Some(list) = find(r, crate::scenarios::LIST_ONE) {
        out.push((
            "G2 warm overhead (one DynamoDB read of one item: list-connections-1)".into(),
            "CPU ≤ 150 µs; wall p50 ≤ 250 µs, p99 ≤ 1 ms".into(),
            format!(
                "CPU p50 {:.0} µs; wall p50 {:.0} µs, p99 {:.0} µs",
                list.warm_cpu_us.p50, list.warm_wall_us.p50, list.warm_wall_us.p99
            ),
            list.warm_cpu_us.p50 <= 150.0 && list.warm_wall_us.p50 <= 250.0 && list.warm_wall_us.p99 <= 1000.0,
        ));
    }
    if let Some((n, _)) = find(r, crate::scenarios::LIST_ONE).and_then(|m| m.allocations) {
        out.push((
            "G4 allocations per API invocation (list-connections-1)".into(),
            "≤ 500".into(),
            format!("{n:.0}"),
            n <= 500.0,
        ));
    }
    let sm: f64 = functions.iter().map(|m| calls_by_service(m).get("Secrets Manager").copied().unwrap_or(0.0)).sum();
    // The functions that neither read nor write a token.
    let tokenless: Vec<&str> = [
        crate::scenarios::LIST_ONE,
        "list-connections",
        "create-connect-session",
        "create-reauth-session",
        "finch-webhook",
    ]
    .into_iter()
    .filter(|n| find(r, n).is_some())
    .collect();
    let kms_free: Vec<&str> = tokenless
        .iter()
        .copied()
        .filter(|n| find(r, n).is_some_and(|m| calls_by_service(m).get("KMS").copied().unwrap_or(0.0) == 0.0))
        .collect();
    out.push((
        "G3 remote calls on warm paths".into(),
        "0 Secrets Manager; 0 KMS where no token is read or written".into(),
        format!("Secrets Manager {sm:.2} per invocation in all; 0 KMS in {}", kms_free.join(", ")),
        sm == 0.0 && kms_free.len() == tokenless.len(),
    ));
    let (init_rss, who_rss) = worst(&|m| mb(m.rss_after_init_kib));
    let (all_rss, who_all) = worst(&|m| mb(m.rss_after_all_kib));
    let (growth, who_growth) = worst(&|m| mb(m.rss_after_all_kib.saturating_sub(m.rss_after_1k_kib)));
    out.push((
        "G5 memory".into(),
        "≤ 12 MB after init, ≤ 16 MB after all, growth 1k → all < 0.5 MB".into(),
        format!("{init_rss:.1} MB ({who_rss}); {all_rss:.1} MB ({who_all}); growth {growth:.2} MB ({who_growth})"),
        init_rss <= 12.0 && all_rss <= 16.0 && growth < 0.5,
    ));
    // What Lambda runs (the arm64 artifacts) when the run measured them, else this machine's build.
    let shipped = functions.iter().any(|m| m.shipped.is_some());
    let sizes = |m: &Measured| if shipped { m.shipped.unwrap_or_default() } else { (m.size, m.zipped) };
    let (size, who_size) = worst(&|m| sizes(m).0 as f64 / 1e6);
    let (zip, who_zip) = worst(&|m| sizes(m).1 as f64 / 1e6);
    let over: Vec<String> = functions
        .iter()
        .filter(|m| sizes(m).0 as f64 / 1e6 > 10.0 || sizes(m).1 as f64 / 1e6 > 4.5)
        .map(|m| m.name.clone())
        .collect();
    out.push((
        if shipped {
            "G6 binary size (arm64, as `sam build` ships it)"
        } else {
            "G6 binary size (this machine's target)"
        }
        .into(),
        "≤ 10 MB stripped, ≤ 4.5 MB zipped".into(),
        format!(
            "largest {size:.2} MB ({who_size}); {zip:.2} MB zipped ({who_zip}); over: {}",
            if over.is_empty() { "none".into() } else { over.join(", ") }
        ),
        size <= 10.0 && zip <= 4.5,
    ));
    let at = |label: &str| r.sweep.iter().find(|w| w.label == label);
    if let (Some(fast), Some(slow)) = (at("Finch at 0 ms"), at("Finch at 100 ms")) {
        let rss = r.sweep.iter().map(|w| mb(w.peak_rss_kib)).fold(0.0, f64::max);
        out.push((
            "G7 sweep throughput".into(),
            "≥ 5,000 checks/s at 0 ms; ≥ 500/s at 100 ms with ≤ 64 in flight; RSS ≤ 32 MB whatever N".into(),
            format!(
                "{:.0}/s at 0 ms; {:.0}/s at 100 ms ({} in flight); peak RSS {rss:.1} MB",
                fast.checks_per_second, slow.checks_per_second, slow.in_flight
            ),
            fast.checks_per_second >= 5000.0 && slow.checks_per_second >= 500.0 && rss <= 32.0,
        ));
    }
    if let Some(w) = r.sweep.iter().find(|w| w.budget_share.is_some()) {
        let share = w.budget_share.unwrap_or(0.0);
        out.push((
            "G8 sweep compliance".into(),
            "0 × 429; ≥ 90 % of the configured budget".into(),
            format!("{} × 429; {:.0} % of {:.0}/s", w.rate_limited, share * 100.0, w.budget_per_second.unwrap_or(0.0)),
            w.rate_limited == 0 && share >= 0.9,
        ));
    }
    out
}

/// G10, read from the source: each function's `main.rs` runtime attribute.
fn runtime_flavours() -> (String, bool) {
    let Ok(dirs) = std::fs::read_dir("functions") else { return ("functions/ not found".into(), false) };
    let (mut current, mut other) = (0, Vec::new());
    for dir in dirs.flatten() {
        let main = std::fs::read_to_string(dir.path().join("src/main.rs")).unwrap_or_default();
        if main.contains("#[tokio::main(flavor = \"current_thread\")]") {
            current += 1;
        } else {
            other.push(dir.file_name().to_string_lossy().into_owned());
        }
    }
    if other.is_empty() {
        (format!("`current_thread` in all {current} functions' `main.rs`"), current > 0)
    } else {
        (format!("not `current_thread`: {}", other.join(", ")), false)
    }
}
