#!/usr/bin/env bash
# Runs Perch locally: DynamoDB Local (DynamoDB), moto (KMS, Secrets Manager, SQS, EventBridge),
# the Finch emulator, and every function on the routes of template.yaml with a development JWT
# issuer, and the connections page (web/) at http://127.0.0.1:$PORT/. Idempotent: a second
# run stops the previous stack and starts a fresh one. Ctrl-C stops everything.
#
# DynamoDB is DynamoDB Local, not moto: moto copies a table on every transaction, so a pay
# history's thousands of records would take it minutes; DynamoDB Local takes them in seconds.
#
# Ports: PORT (Perch, 3000), FINCH_PORT (4010), MOTO_PORT (5000), DDB_PORT (5001).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv
ensure_web
ensure_dynamodb_local

PORT=${PORT:-3000}
FINCH_PORT=${FINCH_PORT:-4010}
MOTO_PORT=${MOTO_PORT:-5000}
DDB_PORT=${DDB_PORT:-5001}

say "building perch-local and the Finch emulator (a cold build takes a few minutes)"
cargo build --locked -p perch-local -p finch-emulator

# A previous stack (this script run before, perhaps still running elsewhere) is replaced.
for name in perch-local perch-local-finch moto dynamodb-local; do stop_pid "$name"; done
for port in "$PORT" "$FINCH_PORT" "$MOTO_PORT" "$DDB_PORT"; do
    port_free "$port" || die "port $port is in use by another program: stop it or choose another (PORT, FINCH_PORT, MOTO_PORT, DDB_PORT)"
done

# This run stops only what it started (a newer run may already own the pid files).
MINE=()
cleanup() {
    for pid in "${MINE[@]}"; do kill "$pid" 2>/dev/null || true; done
    for name in perch-local perch-local-finch moto dynamodb-local; do
        if [ -f "$STATE/$name.pid" ] && printf '%s\n' "${MINE[@]}" | grep -qx "$(cat "$STATE/$name.pid" 2>/dev/null)"; then rm -f "$STATE/$name.pid"; fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting moto on 127.0.0.1:$MOTO_PORT"
start_moto "$MOTO_PORT" moto
MINE+=("$(cat "$STATE/moto.pid")")
say "starting DynamoDB Local on 127.0.0.1:$DDB_PORT"
start_dynamodb_local "$DDB_PORT" dynamodb-local 512m
MINE+=("$(cat "$STATE/dynamodb-local.pid")")
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT"

start_finch_and_perch "$PORT" "$FINCH_PORT" "http://127.0.0.1:$MOTO_PORT" perch-local
MINE+=("$(cat "$STATE/perch-local-finch.pid")" "$(cat "$STATE/perch-local.pid")")

cat >&2 <<MSG

Perch is up. Open the connections page: http://127.0.0.1:$PORT/
  (Finch emulator: http://127.0.0.1:$FINCH_PORT/_emulator/, moto: http://127.0.0.1:$MOTO_PORT,
   DynamoDB Local: http://127.0.0.1:$DDB_PORT)
Or use the API; a token for customer "acme":
  TOKEN=\$(curl -s -X POST http://127.0.0.1:$PORT/dev/token -H 'content-type: application/json' -d '{"customer_id":"acme"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
The README walks through the rest. Ctrl-C stops the stack.

MSG
wait "$(cat "$STATE/perch-local.pid")"
