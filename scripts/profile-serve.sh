#!/usr/bin/env bash
# Where the router's CPU goes while it serves (issue 16: "profile first"): the router on the
# embedded default with batch window 0 gets decision-only Route calls from the load generator at
# QPS calls/s (default 10000; the same calls as scripts/bench-serve.sh's router-window0 row) while
# `perf record` samples the router process for 8 s. Writes docs/results/serve-perf.txt: the
# loadgen's figures, the share of samples per shared object, and the top functions by self time
# (symbols from the release build's symbol table; no call graphs: the release build has no debug
# info or frame pointers). Needs `perf` (Debian: linux-perf) and permission to profile
# (kernel.perf_event_paranoid ≤ 1, or root). Not part of CI.
#
#   bash scripts/profile-serve.sh [QPS] [--records]
#
# --records: cycle the 5,989 dcrouter prompts (predictions not cached) instead of the 8 short
# built-in prompts.
set -euo pipefail
cd "$(dirname "$0")/.."
QPS=10000
RECORDS=()
SUFFIX=""
for a in "$@"; do
  case "$a" in
    --records) RECORDS=(--records data/dcrouter.jsonl.gz); SUFFIX="-records" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    ''|*[!0-9]*) echo "usage: bash scripts/profile-serve.sh [QPS] [--records]" >&2; exit 2 ;;
    *) QPS="$a" ;;
  esac
done
command -v perf > /dev/null || { echo "profile-serve: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin llm-router -q
BIN="$CARGO_TARGET_DIR/release/llm-router"
OUT=docs/results
mkdir -p "$OUT"
source scripts/router-lib.sh
scratch

start_router prof "$BIN" 20161 8161 "s#window_ms: 5 #window_ms: 0 #"
rpid="${pids[-1]}"
"$BIN" loadgen --addr 127.0.0.1:20161 --qps "$QPS" --duration 12 --concurrency 4096 --json "${RECORDS[@]}" \
  > "$tmp/load.json" 2>/dev/null &
lpid=$!
sleep 2
perf record -F 1999 -p "$rpid" -o "$tmp/perf.data" -- sleep 8 2> "$tmp/perf-record.log" > /dev/null
wait "$lpid"
file="$OUT/serve-perf$SUFFIX.txt"
{
  echo "# perf profile of llm-router serving decision-only Route at $QPS calls/s, window 0$([ -n "$SUFFIX" ] && echo ', dcrouter prompts (no cached predictions)')"
  echo "# bash scripts/profile-serve.sh $*; $(date -u +%Y-%m-%d), $(nproc) cores, loadgen on the same machine; commit $(git rev-parse --short HEAD)"
  python3 - "$tmp/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["ok_latency_ms"]
print(f"loadgen: sent {r['achieved_qps']:.0f}/s, ok {r['ok_qps']:.0f}/s, p50 {l['p50']:.3f} ms, p99 {l['p99']:.3f} ms, errors {r['errors'] or 'none'}")
PY
  echo
  echo "## Samples by shared object"
  perf report -i "$tmp/perf.data" --stdio --no-children --sort dso --percent-limit 0.5 2> /dev/null | grep -v '^#' | grep -v '^$'
  echo
  echo "## Top functions by self time (≥ 0.4 % of samples)"
  perf report -i "$tmp/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.4 2> /dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-160
} > "$file"
echo "wrote $file" >&2
