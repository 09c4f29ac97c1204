#!/usr/bin/env bash
# Builds every fuzz target once (release, debug assertions on, AddressSanitizer) and runs each
# for a bounded time from its committed seeds (corpus/<target>/seed-*); any crash (panic,
# abort, sanitizer report, an input over -timeout seconds or over -rss_limit_mb) fails.
# New corpus entries go to a temporary folder, so the tree stays clean.
#   fuzz/ci.sh [SECONDS_PER_TARGET]     (default 20; needs the nightly toolchain)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
# The instrumented build lives outside the clone (a fresh CI clone reuses the dependencies a
# previous run on the machine built); TTPMAP_FUZZ_TARGET_DIR overrides it.
export CARGO_TARGET_DIR="${TTPMAP_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/ttpmap/fuzz-target}}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build -O -a
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin="$CARGO_TARGET_DIR/$triple/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in $(cargo +nightly fuzz list); do
  mkdir -p "$work/$t" "$work/$t.crash"
  if ! "$bin/$t" "$work/$t" "corpus/$t" -max_total_time="$secs" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$work/$t.crash/" >"$work/$t.log" 2>&1; then
    tail -n 80 "$work/$t.log" >&2
    for a in "$work/$t.crash"/*; do
      [ -f "$a" ] || continue
      echo "fuzz target $t crashed on $(basename "$a") (base64, first 4 KiB):" >&2
      head -c 4096 "$a" | base64 >&2
    done
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)"
  cov="$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n 1)"
  echo "fuzz $t: ${secs}s, ${runs:-?} inputs, ${cov:-cov: ?}, no crash"
done
