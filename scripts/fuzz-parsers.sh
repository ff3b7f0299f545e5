#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of Perch's parsers of untrusted input:
# states, ids and codes; webhook headers and raw bodies; the routes' JSON bodies.
# Long mode, not part of test.sh (it needs the nightly toolchain and a sanitizer build).
#   scripts/fuzz-parsers.sh [seconds per target, default 60]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SECONDS_PER_TARGET=${1:-60}
CARGO_FUZZ_VERSION=0.13.2
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal \
    || die "cargo-fuzz needs the nightly toolchain: rustup toolchain install nightly"
if [ ! -x "$ROOT/.tools/bin/cargo-fuzz" ] || ! "$ROOT/.tools/bin/cargo-fuzz" --version | grep -q "$CARGO_FUZZ_VERSION"; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools (a few minutes)"
    cargo install --locked --root "$ROOT/.tools" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
cd fuzz
for target in state webhook bodies; do
    say "fuzzing $target for ${SECONDS_PER_TARGET}s"
    PATH="$ROOT/.tools/bin:$PATH" cargo +nightly fuzz run "$target" -- -max_total_time="$SECONDS_PER_TARGET" 2>&1 | tail -n 3
done
