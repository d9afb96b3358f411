#!/usr/bin/env bash
# The whole test suite: set-up, formatting, clippy (warnings are errors), every test in release
# mode (one HiGHS build serves build, clippy and tests). A persistent target directory makes
# repeat runs incremental; the first build compiles HiGHS from C++ (~11 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy (release, all targets, -D warnings)" >&2
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test (release)" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --release --workspace 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
