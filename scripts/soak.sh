#!/usr/bin/env bash
# Soak: the router on the embedded default (replay backends), dispatch on, at half its measured
# capacity for MINUTES (default 30), with a config reload (SIGHUP) every 5 minutes. With --llama,
# one catalog model is served by a real llama.cpp server (SmolLM2, scripts/llama_server.py) that
# is killed and restarted every 10 minutes. Not part of CI.
#
#   bash scripts/soak.sh [MINUTES] [--llama]
#
# RELOAD_EVERY / RESTART_EVERY (minutes, defaults 5 and 10) change the fault schedule: a short
# run with faults every minute or two shows whether a fault leaves memory behind each time.
#
# Writes docs/results/soak.txt (soak-llama.txt with --llama; -reloadR-restartK before .txt with
# another schedule): per minute the calls sent and answered, p50 / p99 latency, errors
# by code and the router's RSS (sampled every 10 s); then the RSS growth after the warm-up (the
# first 2 minutes; from one sample to the last, and between the medians of all samples in the same
# windows as the p99 drift), the p99 drift (median of the last 5 minutes over the median of the 5 after the
# warm-up) and every error with the fault that explains it.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=30
LLAMA=no
for a in "$@"; do
  case "$a" in
    --llama) LLAMA=yes ;;
    ''|*[!0-9]*) echo "usage: bash scripts/soak.sh [MINUTES] [--llama]" >&2; exit 2 ;;
    *) MIN="$a" ;;
  esac
done
[ "$MIN" -ge 4 ] || { echo "soak: MINUTES must be at least 4 (2 of warm-up)" >&2; exit 2; }
RELOAD_EVERY="${RELOAD_EVERY:-5}"
RESTART_EVERY="${RESTART_EVERY:-10}"
for v in "$RELOAD_EVERY" "$RESTART_EVERY"; do
  case "$v" in ''|*[!0-9]*|0) echo "soak: RELOAD_EVERY and RESTART_EVERY are whole minutes, at least 1" >&2; exit 2 ;; esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin llm-router -q
BIN="$CARGO_TARGET_DIR/release/llm-router"
OUT=docs/results
mkdir -p "$OUT"
source scripts/router-lib.sh
scratch
# The default tenant's budget would run out within the hour at this rate (calls then refused
# as over budget): the soak is about the router, so the tenant gets plenty.
budget_expr="s#budget_usd: 50\$#budget_usd: 1000000#"
catalog_expr="s#^##"
llama_pid=""
if [ "$LLAMA" = yes ]; then
  port=18191
  start_llama() {
    python3 scripts/llama_server.py --model smollm2 --port "$port" > "$tmp/llama.log" 2>/dev/null &
    llama_pid=$!
    pids+=("$llama_pid")
    for _ in $(seq 1 120); do grep -q "llama serving" "$tmp/llama.log" && return 0; sleep 0.5; done
    echo "the llama server did not start" >&2; exit 1
  }
  start_llama
  # The catalog's first model goes to the llama server.
  python3 - "$PWD/deploy/catalogs/dcrouter.yaml" "$tmp/catalog.yaml" "$port" <<'PY'
import sys, yaml
src, dst, port = sys.argv[1:]
c = yaml.safe_load(open(src))
c["models"][0]["backend"] = f"http://127.0.0.1:{port}"
c["models"][0]["max_concurrency"] = 2
yaml.safe_dump(c, open(dst, "w"))
PY
  catalog_expr="s#^catalog: .*#catalog: $tmp/catalog.yaml#"
fi
start_router soak "$BIN" 20191 8191 "$budget_expr; $catalog_expr"
rpid="${pids[-1]}"

# Capacity: closed loop at the admission limit for 10 s.
"$BIN" loadgen --addr 127.0.0.1:20191 --qps 0 --concurrency 256 --duration 10 --dispatch \
  --records data/dcrouter.jsonl.gz --json > "$tmp/capacity.json" 2>/dev/null
cap="$(python3 -c "import json; print(json.load(open('$tmp/capacity.json'))['ok_qps'])")"
qps="$(python3 -c "print(max(1, int($cap / 2)))")"
echo "soak: capacity $cap calls/s; offering $qps/s for $MIN minutes" >&2

( while kill -0 "$rpid" 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' "/proc/$rpid/status" 2>/dev/null || echo 0)"
    sleep 10
  done ) > "$tmp/rss.txt" &
pids+=($!)
: > "$tmp/faults.txt"
t0=$(date +%s)
for m in $(seq 1 "$MIN"); do
  if [ $((m % RELOAD_EVERY)) -eq 0 ]; then
    kill -HUP "$rpid"
    echo "$m reload" >> "$tmp/faults.txt"
  fi
  if [ "$LLAMA" = yes ] && [ $((m % RESTART_EVERY)) -eq 0 ]; then
    kill "$llama_pid" 2>/dev/null || true
    wait "$llama_pid" 2>/dev/null || true
    sleep 5
    start_llama
    echo "$m llama-restart" >> "$tmp/faults.txt"
  fi
  "$BIN" loadgen --addr 127.0.0.1:20191 --qps "$qps" --concurrency 4096 --duration 60 --dispatch \
    --records data/dcrouter.jsonl.gz --timeout-ms 5000 --json > "$tmp/minute-$m.json" 2>/dev/null
  echo "soak: minute $m of $MIN done" >&2
done
alive=yes; kill -0 "$rpid" 2>/dev/null || alive=no
# What the router says it did: answers by model and outcome, models passed over for a deadline.
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8191/metrics', timeout=10).read().decode())" | grep -E '^llmroute_(requests_total|passed_over_late_total|fallbacks_total)\{' \
  | grep -v ' 0$' > "$tmp/metrics.txt" || true

REPORT="$OUT/soak"; [ "$LLAMA" = yes ] && REPORT="$REPORT-llama"
# Another fault schedule than the default writes its own file.
[ "$RELOAD_EVERY/$RESTART_EVERY" = 5/10 ] || REPORT="$REPORT-reload$RELOAD_EVERY-restart$RESTART_EVERY"
REPORT="$REPORT.txt"
python3 - "$tmp" "$MIN" "$cap" "$qps" "$t0" "$alive" "$LLAMA" "$RELOAD_EVERY" "$RESTART_EVERY" > "$REPORT" <<'PY'
import json, statistics, sys
tmp, minutes, cap, qps, t0, alive, llama, reload_every, restart_every = sys.argv[1:]
minutes, t0 = int(minutes), int(t0)
rss = [tuple(map(int, l.split())) for l in open(f"{tmp}/rss.txt") if len(l.split()) == 2]
faults = {}
for l in open(f"{tmp}/faults.txt"):
    m, what = l.split()
    faults.setdefault(int(m), []).append(what)
print(f"# Soak: {minutes} min, replay backends{f' + SmolLM2 on llama.cpp (restarted every {restart_every} min)' if llama == 'yes' else ''}, "
      f"dispatch on, {qps}/s offered (half the measured capacity {float(cap):.0f}/s), reload every {reload_every} min")
print(f"{'min':>3} {'sent/s':>7} {'ok/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS KiB':>8}  errors / faults")
p99s, rss_at = [], []
total_err, messages, examples = {}, {}, {}
for m in range(1, minutes + 1):
    r = json.load(open(f"{tmp}/minute-{m}.json"))
    l = r["ok_latency_ms"]
    end = t0 + 60 * m
    before = [v for (t, v) in rss if t <= end]
    r_now = before[-1] if before else 0
    rss_at.append(r_now)
    p99s.append(l["p99"])
    for k, v in r["errors"].items():
        total_err[k] = total_err.get(k, 0) + v
    for code, seen in r.get("error_messages", {}).items():
        for k in seen:
            messages[(code, k["message"])] = messages.get((code, k["message"]), 0) + k["n"]
            examples.setdefault((code, k["message"]), k["example"])
    note = " ".join(faults.get(m, []))
    print(f"{m:>3} {r['achieved_qps']:7.0f} {r['ok_qps']:7.0f} {l['p50']:7.2f} {l['p99']:7.2f} {r_now:8d}  {r['errors'] or ''} {note}")
warm = 2
after = rss_at[warm - 1]
growth = (rss_at[-1] - after) / after * 100 if after else float("nan")
first = statistics.median(p99s[warm:warm + 5])
last = statistics.median(p99s[-5:])
print(f"\nRSS after warm-up (minute {warm}) {after} KiB, at the end {rss_at[-1]} KiB: growth {growth:+.1f} %")
# One sample moves by ~5 % with what is in flight at that instant: the medians of all the samples
# (every 10 s) in the same windows as the p99 drift say whether the level moved.
def window(lo, hi):  # samples taken during minutes lo..hi
    return [v for (t, v) in rss if t0 + 60 * (lo - 1) < t <= t0 + 60 * hi]
early, late = window(warm + 1, warm + 5), window(minutes - 4, minutes)
if early and late:
    e, l = statistics.median(early), statistics.median(late)
    print(f"RSS median of the samples in minutes {warm + 1}-{warm + 5} {e:.0f} KiB, in the last 5 {l:.0f} KiB: growth {(l / e - 1) * 100:+.1f} %"
          f" (range over the run after warm-up {min(v for (t, v) in rss if t > t0 + 60 * warm)}-{max(v for (t, v) in rss if t > t0 + 60 * warm)} KiB)")
print(f"p99: median of minutes {warm + 1}-{warm + 5} {first:.2f} ms, of the last 5 {last:.2f} ms: drift {(last / first - 1) * 100:+.1f} %")
print(f"errors over the run: {total_err or 'none'}; router alive at the end: {alive}")
for (code, msg), n in sorted(messages.items(), key=lambda kv: -kv[1]):
    print(f"  {n:6d} x {code}: {msg}  (e.g. {examples[(code, msg)]!r})")
print("router counters at the end (non-zero):")
for l in open(f"{tmp}/metrics.txt"):
    print("  " + l.strip())
PY
cat "$REPORT"
