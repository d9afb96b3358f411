#!/usr/bin/env bash
# The main job: evaluates the assigners on the vendored dcrouter records (9 real models) under
# adversarial batching, prints the table and writes out/eval-dcrouter.{json,svg}.
# With arguments, runs `llm-router ARGS...` instead (e.g. `eval --records data/routellm.jsonl.gz`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin llm-router
BIN="$CARGO_TARGET_DIR/release/llm-router"
if [ $# -gt 0 ]; then
  exec "$BIN" "$@"
fi
mkdir -p out
exec "$BIN" eval \
  --records data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml \
  --assigners fast,per-query-price,per-query-threshold,oracle \
  --batching adversarial --json-out out/eval-dcrouter.json --plot out/eval-dcrouter.svg
