#!/usr/bin/env bash
# Where a decision-only Route call's time goes inside the router (issue 16): decode, input,
# validate (cached prediction; the online features alone), estimate (cache miss), decide for
# batches of 1 / 8 / 64, reply, encode, and the whole call in process (Api::route: the batcher's
# queue and window, the deciding task, the reply channel; window 0 and 5 ms) — mean / p50 / p99 µs
# over 20,000 calls on the embedded
# default (deploy/local/router.yaml, dcrouter prompts), 1 thread (router::stagebench; the example
# router/examples/stage_bench.rs). Compare with docs/results/serve-bench.txt, which measures the
# whole call over gRPC against a bare echo server: the difference is the network, HTTP/2 and the
# hops between tokio tasks. Writes docs/results/serve-stages.txt (~1 min; not in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release -q -p router --example stage_bench
{
  "$CARGO_TARGET_DIR/release/examples/stage_bench" --calls "${CALLS:-20000}" --window-ms 0 "$@"
  echo
  "$CARGO_TARGET_DIR/release/examples/stage_bench" --calls "${CALLS:-20000}" --window-ms 5 "$@" | grep "whole call"
} | tee docs/results/serve-stages.txt
