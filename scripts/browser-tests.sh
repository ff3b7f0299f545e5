#!/usr/bin/env bash
# The connections page's browser tests (web/tests/): a stack of its own on free ports (DynamoDB Local, moto,
# the Finch emulator, perch-local serving the page), then Playwright (playwright-core from npm)
# driving Debian's Chromium headless through the whole story. Screenshots of each step go to
# target/browser-tests/. Called by scripts/test.sh; runs on its own too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv
ensure_web
ensure_chromium
ensure_dynamodb_local

cargo build --locked -p perch-local -p finch-emulator

NAME=browser-tests
PORT=$(free_port) FINCH_PORT=$(free_port) MOTO_PORT=$(free_port) DDB_PORT=$(free_port)
trap 'stop_pid "$NAME"; stop_pid "$NAME-finch"; stop_pid "$NAME-moto"; stop_pid "$NAME-ddb"' EXIT
start_moto "$MOTO_PORT" "$NAME-moto"
# DynamoDB on DynamoDB Local, as scripts/run.sh has it (a pay history is thousands of records).
start_dynamodb_local "$DDB_PORT" "$NAME-ddb" 512m
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT"
# Time compressed, as in the benchmark: a pay backfill's waits for Finch's rate windows take
# seconds here instead of minutes (the limits themselves are Finch's).
export FINCH_PRODUCT_WINDOW_SECONDS=5 FINCH_IP_WINDOW_SECONDS=25
start_finch_and_perch "$PORT" "$FINCH_PORT" "http://127.0.0.1:$MOTO_PORT" "$NAME"

SHOTS="$ROOT/target/browser-tests"
rm -rf "$SHOTS"
say "running the browser tests (Chromium headless; screenshots in target/browser-tests/)"
(cd web && PERCH_URL="http://127.0.0.1:$PORT" FINCH_URL="http://127.0.0.1:$FINCH_PORT" SCREENSHOT_DIR="$SHOTS" \
    node --test --test-concurrency=1 tests/) \
    || die "browser tests failed: screenshots in target/browser-tests/, logs in .local/$NAME.log and .local/$NAME-finch.log"
