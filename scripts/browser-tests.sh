#!/usr/bin/env bash
# The connections page's browser tests (web/tests/): a stack of its own on free ports (moto,
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

cargo build --locked -p perch-local -p finch-emulator

NAME=browser-tests
PORT=$(free_port) FINCH_PORT=$(free_port) MOTO_PORT=$(free_port)
trap 'stop_pid "$NAME"; stop_pid "$NAME-finch"; stop_pid "$NAME-moto"' EXIT
start_moto "$MOTO_PORT" "$NAME-moto"
start_finch_and_perch "$PORT" "$FINCH_PORT" "http://127.0.0.1:$MOTO_PORT" "$NAME"

SHOTS="$ROOT/target/browser-tests"
rm -rf "$SHOTS"
say "running the browser tests (Chromium headless; screenshots in target/browser-tests/)"
(cd web && PERCH_URL="http://127.0.0.1:$PORT" FINCH_URL="http://127.0.0.1:$FINCH_PORT" SCREENSHOT_DIR="$SHOTS" \
    node --test --test-concurrency=1 tests/) \
    || die "browser tests failed: screenshots in target/browser-tests/, logs in .local/$NAME.log and .local/$NAME-finch.log"
