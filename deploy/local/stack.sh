#!/usr/bin/env bash
# The stack on one machine, no Docker: a Redis (AOF) holding tenants' budgets for both routers,
# three llama.cpp model servers (xllamacpp: SmolLM2-135M twice, Gemma-3-270M), two router replicas
# in front of them sharing the Redis budget store, a Prometheus scraping both routers; a minute of
# load through each router (`llm-router loadgen --dispatch`), then a summary (QPS, latency
# percentiles, per-batch spend vs budget, fallbacks per replica, the tenant's shared spend in Redis
# vs its budget, Prometheus queries) and everything it started is stopped.
# Needs `bash scripts/setup.sh --test` (redis-server, xllamacpp, model packages, prometheus).
#   bash deploy/local/stack.sh [--duration 60] [--qps 0.5]   (calls per second per router)
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=60
QPS=0.5
TENANT_BUDGET=0.0003  # the tenant's budget, shared by both routers through Redis (binds during the minute)
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --qps) QPS=$2; shift 2 ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) echo "stack.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release -q -p router --bin llm-router
BIN="$CARGO_TARGET_DIR/release/llm-router"
WORK=$(mktemp -d /tmp/llmroute-stack.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stack: stopped ${#PIDS[@]} processes; logs in $WORK" >&2
}
trap cleanup EXIT INT TERM
wait_for() { # url seconds
  for _ in $(seq 1 $(( $2 * 5 ))); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "stack: $1 did not answer in $2 s" >&2; return 1
}

echo "stack: redis (budgets shared by the routers)" >&2
mkdir -p "$WORK/redis"
redis-server --port 18501 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always --dir "$WORK/redis" \
  > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p 18501 ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
redis-cli -p 18501 ping | grep -q PONG || { echo "stack: redis did not start" >&2; exit 1; }

echo "stack: model servers" >&2
i=0
for m in smollm2 gemma3 smollm2; do
  port=$((18101 + i))
  python3 scripts/llama_server.py --model "$m" --port "$port" --parallel 2 > "$WORK/llama-$i.log" 2>&1 &
  PIDS+=($!)
  i=$((i + 1))
done
for port in 18101 18102 18103; do wait_for "http://127.0.0.1:$port/health" 90; done

cat > "$WORK/catalog.yaml" <<CAT
name: stack
models:
- {name: smollm2-a, backend: "http://127.0.0.1:18101", price_in_per_mtok: 0.05, price_out_per_mtok: 0.1, max_concurrency: 2, default_output_tokens: 24}
- {name: gemma3, backend: "http://127.0.0.1:18102", price_in_per_mtok: 0.1, price_out_per_mtok: 0.2, max_concurrency: 2, default_output_tokens: 24}
- {name: smollm2-b, backend: "http://127.0.0.1:18103", price_in_per_mtok: 0.2, price_out_per_mtok: 0.4, max_concurrency: 2, default_output_tokens: 24}
CAT
for r in 0 1; do
  cat > "$WORK/router-$r.yaml" <<CFG
listen: {grpc: "127.0.0.1:$((18201 + r))", http: "127.0.0.1:$((18301 + r))"}
catalog: $WORK/catalog.yaml
estimator:
  records: $PWD/data/dcrouter.jsonl.gz
  proxies: {smollm2-a: mistral-7b-instruct-v0.3, gemma3: gemma-2-9b-it, smollm2-b: llama-3.3-nemotron-super-49b-v1}
batch: {window_ms: 5, max_batch: 32}
limits: {max_prompt_chars: 1500, default_output_tokens: 24}
budget: {per_query_usd: 0.000025, prior_margin: 1.0}
assigner: {kind: fast, gamma: 1.0}
backends: {timeout_ms: 60000, breaker_failures: 3, breaker_open_ms: 2000}
budget_store: {kind: redis, redis_url: "redis://127.0.0.1:18501/", key_prefix: stack, on_unreachable: fail_closed}
tenants: [{name: default, budget_usd: $TENANT_BUDGET, window_s: 3600}]
CFG
  RUST_LOG=warn "$BIN" serve --config "$WORK/router-$r.yaml" > "$WORK/router-$r.log" 2>&1 &
  PIDS+=($!)
done
for r in 0 1; do wait_for "http://127.0.0.1:$((18301 + r))/healthz" 60; done

echo "stack: prometheus" >&2
cat > "$WORK/prometheus.yml" <<PROM
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: [$PWD/deploy/prometheus/rules.yml]
scrape_configs:
  - job_name: llmroute
    static_configs: [{targets: ["127.0.0.1:18301", "127.0.0.1:18302"]}]
PROM
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address=127.0.0.1:18401 > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_for http://127.0.0.1:18401/-/ready 30

echo "stack: load, ${DURATION} s at ${QPS} calls/s per router" >&2
for r in 0 1; do
  "$BIN" loadgen --addr "127.0.0.1:$((18201 + r))" --qps "$QPS" --duration "$DURATION" --dispatch \
    --timeout-ms 60000 --concurrency 64 > "$WORK/loadgen-$r.txt" 2>&1 &
  LG[$r]=$!
done
wait "${LG[0]}" "${LG[1]}"
sleep 3

echo
echo "== summary"
for r in 0 1; do
  echo "-- router $r (127.0.0.1:$((18201 + r)))"
  cat "$WORK/loadgen-$r.txt"
  curl -s "http://127.0.0.1:$((18301 + r))/metrics" | awk '
    /^llmroute_spend_usd /{s=$2} /^llmroute_budget_allowed_usd /{a=$2}
    /^llmroute_fallbacks_total/{f+=$2} /^llmroute_requests_total/{q+=$2}
    END {printf "spend %.7f USD vs budget allowed %.7f USD; %d queries answered, %d fallbacks\n", s, a, q, f}'
done
echo "-- tenant budget (shared by both routers, in Redis)"
settled=$(redis-cli -p 18501 GET 'stack:{default}:settled_total')
settles=$(redis-cli -p 18501 GET 'stack:{default}:settled_count')
reserved=$(redis-cli -p 18501 GET 'stack:{default}:reserved')
awk -v s="${settled:-0}" -v n="${settles:-0}" -v r="${reserved:-0}" -v b="$TENANT_BUDGET" 'BEGIN {
  printf "tenant default: spent %.7f USD of its %.7f USD budget (%d calls settled, %.7f USD still reserved)\n", s / 1e9, b, n, r / 1e9 }'
for r in 0 1; do
  curl -s "http://127.0.0.1:$((18301 + r))/metrics" | awk -v r=$r '
    /^llmroute_rejected_total.*tenant_budget/{t+=$2} /^llmroute_budget_settles_pending /{p=$2}
    END {printf "router %d: %d calls refused over the tenant budget, %d settles pending\n", r, t, p}'
done
echo "-- prometheus (both replicas)"
curl -s "http://127.0.0.1:18401/api/v1/query?query=sum(llmroute_requests_total)" | sed 's/^/sum(llmroute_requests_total): /'
echo
curl -s "http://127.0.0.1:18401/api/v1/query?query=llmroute:budget_burn_ratio" | sed 's/^/llmroute:budget_burn_ratio: /'
echo
