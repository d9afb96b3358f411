#!/usr/bin/env bash
# The whole test suite: set-up, formatting, clippy (warnings are errors), every test in release
# mode (one HiGHS build serves build, clippy and tests). A persistent target directory makes
# repeat runs incremental; the first build compiles HiGHS from C++ (~11 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy (release, all targets, -D warnings)" >&2
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test (release)" >&2
cargo test --release --workspace
