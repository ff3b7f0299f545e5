#!/usr/bin/env bash
# Runs every test: formatting, lints, template checks, unit, architecture, in-process and stack
# tests (moto + Finch emulator), the Finch SDK test of the emulator, the connections page in
# Chromium, and the arm64 build of every function; then prints each phase's duration. Installs what it needs into the project (.venv,
# web/node_modules; Node.js and Chromium from Debian's packages where missing). Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
trap 'phase_report' EXIT
need_tools
# CI builds once, from a fresh clone: incremental caches would never be read again and take as
# much disk as the build itself (a CI run once ran out of space in its arm64 phase).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
phase "installing what is missing (.venv, web/node_modules)"
ensure_venv
# The page's Connect SDK is served (and checked) by the Rust stack tests too.
ensure_web

phase "checking formatting (cargo fmt --check)"
cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"

phase "building and linting (cargo clippy -D warnings; a cold build takes a few minutes)"
cargo clippy --workspace --all-targets --locked -- -D warnings

phase "checking template.yaml (cfn-lint, sam validate --lint; offline)"
"$VENV/bin/cfn-lint" template.yaml
SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true "$VENV/bin/sam" validate --lint --region us-east-1 >/dev/null \
    || die "sam validate --lint failed: run it to see why"

MOTO_PORT=$(free_port)
start_moto "$MOTO_PORT" test-moto
trap 'stop_pid test-moto; stop_pid test-ddb; phase_report' EXIT
# The tests reach AWS exactly as the functions do: through the SDK's standard variables.
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1 \
       AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
say "moto on $AWS_ENDPOINT_URL"

phase "running the Rust tests: unit, architecture, in-process, stack (cargo test --workspace)"
cargo test --workspace --locked

phase "fuzzing Perch's API from api/openapi.json (schemathesis; FUZZ_EXAMPLES=1000 for a long run)"
bash scripts/fuzz-api.sh

phase "running the stack tests again with DynamoDB on DynamoDB Local (stricter than moto)"
ensure_dynamodb_local
DDB_PORT=$(free_port)
start_dynamodb_local "$DDB_PORT" test-ddb
# The 10,000-connection sweep ran in the moto pass; 1,000 is enough to exercise the scan here.
AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT" PERCH_SWEEP_CONNECTIONS=1000 cargo test --locked -p perch-tests

phase "running the Finch SDK tests of the emulator (pytest)"
cargo build --locked -p finch-emulator
"$VENV/bin/python" -m pytest -q tests/python

phase "running the browser tests"
bash scripts/browser-tests.sh

# Last: the longest step, and nothing above needs its artifacts.
phase "building every function for arm64"
if [ -n "${CI:-}" ]; then
    # The tests are done and a CI clone is thrown away: give the debug build's disk (many GB of
    # test binaries) to the release build, which needs a few GB of its own on a shared disk.
    say "CI: removing target/debug before the release build ($(du -sh target/debug 2>/dev/null | cut -f1) freed)"
    rm -rf target/debug
fi
bash scripts/build-lambdas.sh

say "all tests passed"
