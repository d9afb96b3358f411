#!/usr/bin/env bash
# Serving benchmarks (writes docs/results/serve-*.json and serve-bench.txt; ~3 min):
#  1. Overhead: decision-only Route latency at 1k, 5k, 10k and 20k offered calls/s against the router on
#     the embedded default (batch window 5 ms, and 0 ms; short built-in prompts, and the dcrouter
#     records' prompts), and against the bare tonic echo server
#     (examples/echo_server.rs) in the same run; ratio router / echo.
#  2. Overload: a router that can serve ~C calls/s (admission.max_concurrency 64, replay 100 ms per
#     answer) is offered 10 x C for 10 s: shed calls get RESOURCE_EXHAUSTED at once, accepted calls
#     finish within their deadline, the router's memory (VmRSS) stays bounded, it does not crash.
#  3. CPU overload: decision-only calls with the dcrouter prompts (no cached predictions) offered
#     at $CPU_QPS (25k/s; more than the router decides here), deadline 1000 ms, against routers with
#     admission.overflow_threads 1 (the default: admitted calls move to a second runtime while the
#     serving one is saturated) and 0 (off), and the echo server: refusal and accepted-call latency.
# The load generator runs on the same machine (2 cores here): figures include its CPU use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin llm-router --example echo_server
BIN="$CARGO_TARGET_DIR/release/llm-router"
ECHO="$CARGO_TARGET_DIR/release/examples/echo_server"
OUT=docs/results
DUR="${DURATION:-8}"
mkdir -p "$OUT"
source scripts/router-lib.sh
scratch

start_router win5 "$BIN" 20151 8151
start_router win0 "$BIN" 20152 8152 "s#window_ms: 5 #window_ms: 0 #"
"$ECHO" 127.0.0.1:20153 > "$tmp/echo.log" 2>&1 &
pids+=($!)
sleep 1

{
  echo "# Decision-only Route latency (ms), ${DUR} s per point, loadgen on the same 2-core machine"
  printf "%-7s %-22s %9s %9s %9s %9s %9s\n" qps target sent/s ok/s p50 p90 p99
} > "$OUT/serve-bench.txt"
for qps in 1000 5000 10000 20000; do
  for t in echo:20153 router-window0:20152 router-window5:20151 router-window5-records:20151; do
    name="${t%%:*}"; port="${t##*:}"
    prompts=(); [ "$name" = router-window5-records ] && prompts=(--records data/dcrouter.jsonl.gz)
    "$BIN" loadgen --addr "127.0.0.1:$port" --qps "$qps" --duration "$DUR" --concurrency 4096 --json "${prompts[@]}" \
      > "$OUT/serve-overhead-$name-$qps.json" 2>/dev/null
    python3 - "$OUT/serve-overhead-$name-$qps.json" "$qps" "$name" >> "$OUT/serve-bench.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["ok_latency_ms"]
print(f"{sys.argv[2]:<7} {sys.argv[3]:<22} {r['achieved_qps']:9.0f} {r['ok_qps']:9.0f} {l['p50']:9.3f} {l['p90']:9.3f} {l['p99']:9.3f}"
      + (f"  errors {r['errors']}" if r["errors"] else ""))
PY
  done
done
python3 - "$OUT" >> "$OUT/serve-bench.txt" <<'PY'
import json, sys
out = sys.argv[1]
print("\n# Ratio to the echo server at the same offered rate (p50 / p99)")
for qps in (1000, 5000, 10000, 20000):
    e = json.load(open(f"{out}/serve-overhead-echo-{qps}.json"))["ok_latency_ms"]
    for name in ("router-window0", "router-window5", "router-window5-records"):
        r = json.load(open(f"{out}/serve-overhead-{name}-{qps}.json"))["ok_latency_ms"]
        print(f"{qps:<7} {name:<22} p50 x{r['p50'] / e['p50']:.1f}  p99 x{r['p99'] / e['p99']:.1f}  "
              f"(router - echo: p50 +{r['p50'] - e['p50']:.3f} ms, p99 +{r['p99'] - e['p99']:.3f} ms)")
print("window5 includes the 5 ms batch window (a query waits up to 5 ms for its batch to close).")
print("Targets other than *-records send 8 short built-in prompts; *-records cycles the 5,989 dcrouter prompts.")
PY

# Overload: capacity first (closed loop at the admission limit), then 10x that, open loop.
start_router over "$BIN" 20154 8154 "s#max_concurrency: 2048 #max_concurrency: 64 #; s#ttft_ms: 20 #ttft_ms: 100 #; s#ms_per_token: 0.5 #ms_per_token: 0 #"
rpid="${pids[-1]}"
rss() { awk '/VmRSS/ {print $2}' "/proc/$rpid/status"; }
rss0="$(rss)"
"$BIN" loadgen --addr 127.0.0.1:20154 --qps 0 --concurrency 64 --duration 5 --dispatch --json \
  > "$OUT/serve-capacity.json" 2>/dev/null
cap="$(python3 -c "import json; print(int(json.load(open('$OUT/serve-capacity.json'))['ok_qps']))")"
rss1="$(rss)"
( peak=0; while kill -0 "$rpid" 2>/dev/null; do v="$(rss || echo 0)"; [ "${v:-0}" -gt "$peak" ] && peak="$v"; echo "$peak" > "$tmp/peak"; sleep 0.2; done ) &
pids+=($!)
"$BIN" loadgen --addr 127.0.0.1:20154 --qps "$((cap * 10))" --concurrency 100000 --duration 10 --dispatch \
  --timeout-ms 1000 --connections 8 --json > "$OUT/serve-overload.json" 2>/dev/null
sleep 1
alive=yes; kill -0 "$rpid" 2>/dev/null || alive=no
rss2="$(rss || echo 0)"
python3 - "$OUT" "$cap" "$rss0" "$rss1" "$(cat "$tmp/peak")" "$rss2" "$alive" >> "$OUT/serve-bench.txt" <<'PY'
import json, sys
out, cap, r0, r1, peak, r2, alive = sys.argv[1:]
o = json.load(open(f"{out}/serve-overload.json"))
ok, rej = o["ok_latency_ms"], o["rejected_latency_ms"]
print(f"\n# Overload: capacity {cap} calls/s (closed loop, 64 admitted, 100 ms replay answers), offered {int(cap) * 10}/s for 10 s, deadline 1000 ms")
print(f"sent {o['achieved_qps']:.0f}/s, answered {o['ok_qps']:.0f}/s; errors {o['errors']}")
print(f"accepted latency ms: p50 {ok['p50']:.1f}  p99 {ok['p99']:.1f}  max {ok['max']:.1f}")
print(f"RESOURCE_EXHAUSTED latency ms: p50 {rej['p50']:.3f}  p99 {rej['p99']:.3f}  max {rej['max']:.3f}  (n = {rej['n']})")
print(f"router VmRSS KiB: idle {r0}, after the capacity run {r1}, peak under overload {peak}, after {r2}; alive after: {alive}")
PY
# CPU overload: decision-only calls at more than the router can decide, against a router whose
# admitted calls move to a second runtime while the serving one is saturated
# (admission.overflow_threads 1, the default) and one without (0); the echo server at the same
# rate is the floor.
# Each router gets a warm-up run first (a cold router's first second is allocation-bound), then
# the two alternate for two rounds.
CPU_QPS="${CPU_QPS:-25000}"
start_router ov1 "$BIN" 20155 8155
start_router ov0 "$BIN" 20156 8156 "s#overflow_threads: 1 #overflow_threads: 0 #"
cpu_run() { # PORT OUTFILE
  "$BIN" loadgen --addr "127.0.0.1:$1" --qps "$CPU_QPS" --duration "$DUR" --concurrency 8192 --timeout-ms 1000 \
    --records data/dcrouter.jsonl.gz --timeline-ms 500 --json > "$2" 2>/dev/null
}
for port in 20155 20156; do cpu_run "$port" "$tmp/warm.json"; done
for round in 1 2; do
  for t in ov1:20155 ov0:20156 echo:20153; do
    cpu_run "${t##*:}" "$OUT/serve-cpu-${t%%:*}-$round.json"
  done
done
python3 - "$OUT" "$CPU_QPS" >> "$OUT/serve-bench.txt" <<'PY'
import json, sys
out, qps = sys.argv[1], sys.argv[2]
print(f"\n# CPU overload: decision-only, dcrouter prompts, {qps}/s offered (more than the router decides on these cores), deadline 1000 ms, warm routers")
print(f"{'target':<38} {'round':>5} {'sent/s':>7} {'ok/s':>7} {'ok p50':>7} {'ok p99':>7} {'refused':>8} {'ref p50':>8} {'ref p99':>8}")
for name, label in (("ov1", "router, overflow_threads 1 (default)"), ("ov0", "router, overflow_threads 0 (off)"), ("echo", "echo server (the floor)")):
    for rnd in (1, 2):
        r = json.load(open(f"{out}/serve-cpu-{name}-{rnd}.json"))
        o, j = r["ok_latency_ms"], r["rejected_latency_ms"]
        print(f"{label:<38} {rnd:>5} {r['achieved_qps']:7.0f} {r['ok_qps']:7.0f} {o['p50']:7.1f} {o['p99']:7.1f} {j['n']:8d} {j['p50']:8.1f} {j['p99']:8.1f}")
print("(ms; refused = RESOURCE_EXHAUSTED: the concurrency limit, or the expected wait past the deadline)")
PY
cat "$OUT/serve-bench.txt"
