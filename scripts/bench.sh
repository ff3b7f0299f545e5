#!/usr/bin/env bash
# The benchmark (BENCHMARKS.md): builds the functions as shipped (release profile, this
# machine's target), the hello-world baseline and the harness; installs the Node.js peer;
# starts moto; runs perch-bench; plots the distributions (bench/plot.py → target/bench/latency.png,
# and bench/latency.png with --save). Not part of the test command.
#   scripts/bench.sh            full run (~25 min after the builds): 30 spawns and 10,000
#                               invocations per function, the sweeps, the arm64 artifacts' sizes
#   scripts/bench.sh --smoke    a few minutes: 5 spawns, 50 invocations, no arm64 build
#   scripts/bench.sh --only sync   Perch Sync alone (G12–G15; bench/src/sync.rs): a 20,000-person
#                               full sync, serving it, the Node.js peer, 200 connections within
#                               Finch's limits (time ×4); ~15 min
#   scripts/bench.sh --only pay    the pay history and the person index (bench/src/pay.rs): a
#                               20,000-employee biweekly backfill (~1M statements, time ×6) and
#                               the index of 100,000 people over 10 connections, scored against
#                               the emulator's ground truth; ~2 h on 2 cores, most of it DynamoDB
#                               Local writing 1.35M statements and their feed
#   scripts/bench.sh --only people   the person index alone (the second half of --only pay),
#                               ~30 min
#   scripts/bench.sh --only backfill   the pay backfill alone (the first half of --only pay),
#                               ~1.5 h
#   scripts/bench.sh --critical-path   the redirect callback with remote latencies injected
#                               (PERFORMANCE.md G11; bench/src/critical_path.rs), a minute
#   scripts/bench.sh --cold-first   the first request after a cold start, TLS on the loopback
#                               (G9; bench/src/cold_first.rs): builds list-connections with the
#                               bench-only `bench-tls` feature into target/bench-tls (~10 min
#                               the first time), never into the release directory
# Other options go to perch-bench (bench/src/main.rs): --only NAME, --spawns N, --invocations N.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv

# The plot's matplotlib, only for the benchmark: the test command's venv does without it.
plot_req=bench/requirements.txt plot_stamp="$VENV/.bench-requirements.sha"
if [ "$(cat "$plot_stamp" 2>/dev/null)" != "$(sha256sum "$plot_req" | cut -d' ' -f1)" ]; then
    say "installing matplotlib for the plot (pip, into .venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$plot_req" \
        || die "pip could not install $plot_req: check access to the Python package index"
    sha256sum "$plot_req" | cut -d' ' -f1 > "$plot_stamp"
fi

if ! command -v node >/dev/null; then
    say "installing Node.js for the peer (apt)"
    apt-get install -y nodejs npm >/dev/null || die "could not install Node.js: apt-get install -y nodejs npm"
fi
if ! command -v valgrind >/dev/null; then
    say "installing valgrind for the allocation counts (apt)"
    apt-get install -y valgrind >/dev/null || die "could not install valgrind: apt-get install -y valgrind (or pass --no-allocations)"
fi
if [ ! -d bench/peer-node/node_modules ]; then
    say "installing the Node.js peer's packages (npm ci)"
    (cd bench/peer-node && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed in bench/peer-node"
fi

say "building the functions, the baseline and the harness (release; ~10 min cold on 2 cores)"
packages=(-p perch-bench -p perch-bench-hello)
for f in functions/*/; do packages+=(-p "$(basename "$f" | tr _ -)"); done
cargo build --release --locked "${packages[@]}"

bin_dir=()
case " $* " in
    *" --cold-first "*)
        say "building list-connections trusting the run's loopback CA (bench-tls, target/bench-tls; ~10 min cold)"
        cargo build --release --locked --target-dir target/bench-tls -p list-connections --features perch/bench-tls
        bin_dir=(--bin-dir target/bench-tls/release) ;;
esac

# G6 is about what Lambda runs: a full run also builds the arm64 artifacts (`sam build`, as
# `scripts/build-lambdas.sh` does for a deploy) and reports their sizes beside this machine's.
shipped=()
case " $* " in
    *" --smoke "*|*" --only "*|*" --critical-path "*|*" --cold-first "*) ;;
    *) bash scripts/build-lambdas.sh || die "the arm64 build failed (scripts/build-lambdas.sh); --smoke or --only skip it"
       shipped=(--shipped .aws-sam/build) ;;
esac

MOTO_PORT=$(free_port)
start_moto "$MOTO_PORT" bench-moto
trap 'stop_pid bench-moto' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 \
       AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
# DynamoDB on DynamoDB Local: moto copies every table for each transaction, and a 20,000-person
# sync writes thousands of them (bench/src/sync.rs). The functions' recorded answers come from it.
ensure_dynamodb_local
DDB_PORT=$(free_port)
start_dynamodb_local "$DDB_PORT" bench-ddb 2g
trap 'stop_pid bench-moto; stop_pid bench-ddb' EXIT
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT"

say "measuring (results in target/bench/; --save writes BENCHMARKS.md)"
export PERCH_BENCH_COMMAND="scripts/bench.sh $*" \
       PERCH_BENCH_TOOLS="$(rustc -V | cut -d' ' -f1-2), Node.js $(node --version), moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')"
target/release/perch-bench --peer bench/peer-node "${shipped[@]}" "${bin_dir[@]}" "$@"
# Their figures are in target/bench/critical_path.json and cold_first.json.
case " $* " in *" --critical-path "*|*" --cold-first "*) exit 0 ;; esac

out=target/bench save=
while [ $# -gt 0 ]; do
    case $1 in --out) out=$2; shift ;; --save) save=1 ;; esac
    shift
done
"$VENV/bin/python" bench/plot.py "$out/samples.json" "$out/latency.png" || die "the plot failed (bench/plot.py)"
if [ -n "$save" ]; then
    cp "$out/latency.png" bench/latency.png
    say "saved the plot: bench/latency.png"
fi
