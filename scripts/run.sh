#!/usr/bin/env bash
# The main job: builds llm-router and serves on the embedded default (deploy/local/router.yaml:
# replay backends built from the vendored dcrouter records, so nothing else needs to run):
# gRPC on 127.0.0.1:50051, the OpenAI-compatible facade and /metrics on 127.0.0.1:8080.
# With arguments, runs `llm-router ARGS...` instead (e.g. `route "What is 2+2?"`); `eval ...` and
# `bench-solver ...` run `llmroute-eval` (the offline eval harness and solver benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
if [ ! -x "$CARGO_TARGET_DIR/release/llm-router" ]; then
  echo "run: first build into $CARGO_TARGET_DIR: compiles HiGHS (C++, through cmake) and candle from source;" \
    "measured ~10 min on 2 cores from an empty target directory (README). Later runs rebuild in seconds." >&2
else
  echo "run: building llm-router (incremental, $CARGO_TARGET_DIR)" >&2
fi
case "${1:-}" in
  eval | bench-solver)
    cargo build --release --bin llmroute-eval
    exec "$CARGO_TARGET_DIR/release/llmroute-eval" "$@"
    ;;
esac
cargo build --release --bin llm-router
BIN="$CARGO_TARGET_DIR/release/llm-router"
if [ $# -gt 0 ]; then
  exec "$BIN" "$@"
fi
exec "$BIN" serve --config deploy/local/router.yaml
