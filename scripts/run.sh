#!/usr/bin/env bash
# The main job: builds llm-router and serves on the embedded default (deploy/local/router.yaml:
# replay backends built from the vendored dcrouter records, so nothing else needs to run):
# gRPC on 127.0.0.1:50051, the OpenAI-compatible facade and /metrics on 127.0.0.1:8080.
# With arguments, runs `llm-router ARGS...` instead (e.g. `route "What is 2+2?"`, `eval ...`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin llm-router
BIN="$CARGO_TARGET_DIR/release/llm-router"
if [ $# -gt 0 ]; then
  exec "$BIN" "$@"
fi
exec "$BIN" serve --config deploy/local/router.yaml
