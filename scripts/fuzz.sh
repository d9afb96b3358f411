#!/usr/bin/env bash
# Fuzzes the router's config parser and request validation with cargo fuzz (libFuzzer +
# AddressSanitizer, nightly toolchain): targets config_parse, http_request, grpc_request
# (fuzz/fuzz_targets/). Not part of the test suite or CI: it takes SECONDS per target.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET ...]
#
# Prints executions, corpus size and crashes per target and writes them to
# docs/results/fuzz-summary.txt. Crash inputs land in fuzz/artifacts/TARGET/ (reproduce one with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`); the corpus grows in
# fuzz/corpus/TARGET/ across runs (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_parse http_request grpc_request)
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "fuzz: installing cargo-fuzz" >&2; cargo +nightly install cargo-fuzz --locked; }
bash scripts/setup.sh
tdir="${FUZZ_TARGET_DIR:-$HOME/.cache/llmroute-fuzz-target}"
summary=docs/results/fuzz-summary.txt
mkdir -p docs/results
{
  echo "# cargo fuzz, ${secs} s per target, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
  printf '%-14s %14s %10s %10s %8s\n' target executions exec/s corpus crashes
} > "$summary.tmp"
cd fuzz
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: building" >&2
  cargo +nightly fuzz build --target-dir "$tdir" "$t"
  echo "== $t: fuzzing for $secs s" >&2
  log="$(mktemp)"
  # libFuzzer exits non-zero on a crash; the summary still gets written.
  set +e
  cargo +nightly fuzz run --target-dir "$tdir" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="artifacts/$t/" -rss_limit_mb=4096 2>&1 | tee "$log" |
    grep --line-buffered -E '^#[0-9]+.*(pulse|REDUCE|NEW)' | awk 'NR % 50 == 1' >&2
  set -e
  # libFuzzer pads these with a varying number of spaces.
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]*[0-9]+' "$log" | awk '{print $2}' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | awk '{print $2}' | tail -1)
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '%-14s %14s %10s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes" >> "../$summary.tmp"
  grep -E 'panicked|ERROR: (AddressSanitizer|libFuzzer)' "$log" | head -5 >&2 || true
  rm -f "$log"
done
cd ..
mv "$summary.tmp" "$summary"
cat "$summary"
