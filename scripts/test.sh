#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, handler and stack tests (moto + Finch emulator),
# and the Finch SDK test of the emulator. Installs what it needs into .venv. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv

say "checking formatting (cargo fmt --check)"
cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"

say "building and linting (cargo clippy -D warnings; a cold build takes a few minutes)"
cargo clippy --workspace --all-targets --locked -- -D warnings

MOTO_PORT=$(free_port)
start_moto "$MOTO_PORT" test-moto
trap 'stop_pid test-moto' EXIT
export PERCH_TEST_MOTO_URL="http://127.0.0.1:$MOTO_PORT"
say "moto on $PERCH_TEST_MOTO_URL"

say "running Rust tests (cargo test --workspace)"
cargo test --workspace --locked

say "running the Finch SDK tests of the emulator (pytest)"
cargo build --locked -p finch-emulator
"$VENV/bin/python" -m pytest -q tests/python

say "all tests passed"
