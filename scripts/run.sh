#!/usr/bin/env bash
# The main job: evaluates the assigners on the vendored dcrouter records (9 real models) under
# adversarial batching, prints the table and writes out/eval-dcrouter.{json,svg}.
# Extra arguments go to `llm-router eval` (e.g. --batching random --assigners fast,mip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
mkdir -p out
cargo build --release --bin llm-router
exec "$CARGO_TARGET_DIR/release/llm-router" eval \
  --records data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml \
  --assigners fast,per-query-price,per-query-threshold,oracle \
  --batching adversarial --json-out out/eval-dcrouter.json --plot out/eval-dcrouter.svg "$@"
