#!/usr/bin/env bash
# Builds every function of template.yaml as shipped: `sam build` (BuildMethod rust-cargolambda
# → `cargo lambda build --release --arm64`), then checks each artifact is an arm64 ELF named
# `bootstrap` and prints its size, raw and zipped. Offline; idempotent (a warm build takes
# seconds, a cold one ~10 min on 2 cores: fat LTO links each binary on its own).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need_tools
ensure_venv

# The rustup dist server is not one of the registries this workplace promises: ask for the
# target explicitly so a failure says what it is (cargo-lambda would try, less clearly).
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu \
    || die "could not install the aarch64-unknown-linux-gnu Rust target: run 'rustup target add aarch64-unknown-linux-gnu'"

# A fat-LTO link of aws-lc and the SDK writes a few GB of temporary archives: say so before
# cargo fails half-way with "No space left on device".
mkdir -p target
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((3 * 1024 * 1024)) ]; then
    die "the arm64 build needs about 3 GB free beside target/ and $((free_kib / 1024)) MB are: free some (e.g. 'cargo clean --profile dev' drops the debug build), then re-run"
fi

say "building every function for arm64 (sam build → cargo lambda build --release --arm64)"
# cargo-lambda finds zig as `python3 -m ziglang` on PATH: the venv's python must come first.
# The two variables keep SAM from probing the network for telemetry and instance credentials.
PATH="$VENV/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true \
    "$VENV/bin/sam" build --template-file template.yaml --build-dir .aws-sam/build >"$STATE/sam-build.log" 2>&1 \
    || { tail -30 "$STATE/sam-build.log" >&2; die "sam build failed: full log in $STATE/sam-build.log"; }

say "artifacts (.aws-sam/build/<Function>/bootstrap)"
"$VENV/bin/python" - template.yaml .aws-sam/build <<'PY'
import io, re, sys, zipfile, pathlib
template, build = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
# Logical ids of the functions: the resources whose Type is AWS::Serverless::Function.
functions = re.findall(r"^  (\w+):\n    Type: AWS::Serverless::Function$", template, re.M)
if not functions:
    sys.exit("no AWS::Serverless::Function found in template.yaml")
print(f"{'function':<34}{'stripped':>12}{'zipped':>12}")
bad = []
for name in functions:
    path = build / name / "bootstrap"
    if not path.is_file():
        bad.append(f"{name}: no {path}")
        continue
    data = path.read_bytes()
    # ELF, 64-bit, e_machine 0xB7 = AArch64.
    if data[:4] != b"\x7fELF" or data[4] != 2 or int.from_bytes(data[18:20], "little") != 0xB7:
        bad.append(f"{name}: {path} is not an arm64 ELF")
        continue
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bootstrap", data)
    print(f"{name:<34}{len(data)/1e6:>10.2f}MB{len(buf.getvalue())/1e6:>10.2f}MB")
if bad:
    sys.exit("missing or wrong artifacts:\n  " + "\n  ".join(bad))
print(f"{len(functions)} functions built for arm64")
PY
