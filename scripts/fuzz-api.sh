#!/usr/bin/env bash
# Fuzzes Perch's API from its own OpenAPI document (api/openapi.json) with schemathesis, against
# a local stack on random ports: no 5xx, every answer as documented. Called by test.sh in a
# short mode; for a long run: FUZZ_EXAMPLES=1000 scripts/fuzz-api.sh
#
# Needs the AWS emulator's URL in AWS_ENDPOINT_URL (test.sh passes its moto), or starts moto.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv
EXAMPLES=${FUZZ_EXAMPLES:-40}

cargo build --locked -q -p perch-local -p finch-emulator
NAME="perch-fuzz-$RANDOM$RANDOM"
stop_all() { stop_pid "$NAME"; stop_pid "$NAME-finch"; stop_pid fuzz-moto; }
trap stop_all EXIT
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
    MOTO_PORT=$(free_port)
    start_moto "$MOTO_PORT" fuzz-moto
    AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
fi
PORT=$(free_port)
start_finch_and_perch "$PORT" "$(free_port)" "$AWS_ENDPOINT_URL" "$NAME"
TOKEN=$(curl -s -X POST "http://127.0.0.1:$PORT/dev/token" -H 'content-type: application/json' -d '{"customer_id":"fuzz"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

say "schemathesis: $EXAMPLES examples per operation against http://127.0.0.1:$PORT"
"$VENV/bin/schemathesis" run api/openapi.json --url "http://127.0.0.1:$PORT" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed "${FUZZ_SEED:-1}" --workers 1 --no-color | tee "$STATE/$NAME.fuzz.log"
# The closing count, for the README's figures.
grep -E '^ *[0-9]+ generated' "$STATE/$NAME.fuzz.log" | sed 's/^ */schemathesis: /'
