#!/usr/bin/env bash
# Does the OpenAI facade's forwarding (issue 19) or tracing slow the common path? In one run,
# against this checkout's router and a baseline build: plain chat completions over HTTP (no tools,
# dispatched to replay backends that answer at once; closed loop, 8 connections) and decision-only
# gRPC Route at 1,000 calls/s (the bench-serve row). Runs alternate A B A B; writes
# docs/results/facade-bench.txt and prints it (~4 min after the builds).
#
#   bash scripts/bench-facade.sh [BASELINE_REV]     (default 6ab7c08: the last commit before the facade)
#
# The baseline is built in a git worktree with its own target folder ($CARGO_TARGET_DIR-baseline;
# the first build takes as long as a fresh one), its binary copied aside. BASELINE_BIN=PATH uses an
# llm-router binary built before instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-6ab7c08}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  git worktree remove --force "$tmp/base" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -n "${BASELINE_BIN:-}" ]; then
  cp "$BASELINE_BIN" "$tmp/llm-router-base"
else
  # Its own target folder: cargo's dep-info paths are relative to the workspace, so two checkouts
  # sharing one target folder can each take the other's stale artifacts for fresh.
  git worktree add -f -q "$tmp/base" "$rev"
  (cd "$tmp/base" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR-baseline" cargo build --release --bin llm-router)
  cp "$CARGO_TARGET_DIR-baseline/release/llm-router" "$tmp/llm-router-base"
fi
cargo build --release --bin llm-router
cp "$CARGO_TARGET_DIR/release/llm-router" "$tmp/llm-router-new"
DUR="${DURATION:-8}"

source scripts/router-lib.sh
# Replay backends answer at once: the router's own time is what is compared.
instant="s#ttft_ms: 20 #ttft_ms: 0 #; s#ms_per_token: 0.5 #ms_per_token: 0 #"
start_router base "$tmp/llm-router-base" 20161 8161 "$instant"
start_router new "$tmp/llm-router-new" 20162 8162 "$instant"
BIN="$tmp/llm-router-new"
out=docs/results
mkdir -p "$out"
for round in 1 2; do
  for t in base:20161:8161 new:20162:8162; do
    IFS=: read -r name grpc http <<< "$t"
    python3 scripts/http_chat_load.py --addr "127.0.0.1:$http" --key llmroute-demo-key --duration "$DUR" \
      > "$tmp/chat-$name-$round.json"
    "$BIN" loadgen --addr "127.0.0.1:$grpc" --qps 1000 --duration "$DUR" --concurrency 4096 --json \
      > "$tmp/grpc-$name-$round.json" 2>/dev/null
  done
done
python3 - "$tmp" "$rev" "$(git rev-parse --short HEAD)" > "$out/facade-bench.txt" <<'PY'
import json, sys
tmp, rev, head = sys.argv[1:]
print(f"# Plain chat over the facade and decision-only gRPC, baseline {rev} vs this checkout {head}, one run")
print("# (A B A B, 8 s each; replay answers at once; loadgen and clients on the same 2-core machine)")
print(f"{'target':<38} {'round':>5} {'calls/s':>8} {'p50':>8} {'p90':>8} {'p99':>8}  errors")
rows = {}
for kind, label in (("chat", "HTTP chat, closed loop x8"), ("grpc", "gRPC Route 1000/s decision-only")):
    for name in ("base", "new"):
        for rnd in (1, 2):
            r = json.load(open(f"{tmp}/{kind}-{name}-{rnd}.json"))
            if kind == "chat":
                l, rate, err = r["latency_ms"], r["calls_per_s"], r["errors"]
            else:
                l, rate, err = r["ok_latency_ms"], r["ok_qps"], r["errors"]
            rows.setdefault((kind, name), []).append(l)
            print(f"{label + ' ' + name:<38} {rnd:>5} {rate:8.0f} {l['p50']:8.3f} {l['p90']:8.3f} {l['p99']:8.3f}  {err}")
print("\n# new / base (mean of the two rounds)")
for kind in ("chat", "grpc"):
    for p in ("p50", "p99"):
        b = sum(l[p] for l in rows[(kind, "base")]) / 2
        n = sum(l[p] for l in rows[(kind, "new")]) / 2
        print(f"{kind:<5} {p}: base {b:.3f} ms, new {n:.3f} ms, ratio {n / b:.2f}")
PY
cat "$out/facade-bench.txt"
