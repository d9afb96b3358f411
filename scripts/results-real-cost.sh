#!/usr/bin/env bash
# Reproduces docs/results/real-cost/ (issue 14): every vendored dataset — pricing-reversal SimpleQA
# and reasoning (GPQA + AIME + LiveMathBench) with the real recorded cost of every answer, RouteLLM
# (recorded response lengths), the local llama.cpp records (token counts from the servers' usage),
# dcrouter (fixed 256 output tokens) and dcrouter with log-normal cost noise — under random and
# adversarial batching, spends 0.02 … 0.5: fast, mip and per-query-price on the default estimator,
# fast and per-query-price on the plain TF-IDF kNN reference, and the oracle. Then the summary
# tables (docs/results/real-cost.md) by scripts/real_cost_summary.py, and the multi-seed table
# (docs/results/real-cost-seeds.txt) by scripts/real_cost_seeds.py. ~17 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bins
BIN="$CARGO_TARGET_DIR/release"
OUT=docs/results/real-cost
mkdir -p "$OUT"
ARMS=fast,mip,per-query-price,fast@plain-knn,per-query-price@plain-knn,oracle
SPEND=0.02,0.05,0.1,0.2,0.5
ev() { # name records extra-args...
  local name=$1 rec=$2; shift 2
  echo "== $name" >&2
  "$BIN/llmroute-eval" eval --records "$rec" --assigners "$ARMS" --spend "$SPEND" --json-out "$OUT/$name.json" "$@" > "$OUT/$name.txt"
}
for b in random adversarial; do
  ev "simpleqa-$b" data/pricing-reversal-simpleqa.jsonl.gz --batching "$b"
  # 378 queries: a test split of 114, so batches of 16.
  ev "reasoning-$b" data/pricing-reversal-reasoning.jsonl.gz --batching "$b" --batch-size 16
  ev "routellm-$b" data/routellm.jsonl.gz --catalog deploy/catalogs/routellm.yaml --batching "$b"
  ev "local-llama-$b" data/collected-local-llama.jsonl --batching "$b" --batch-size 16
  ev "dcrouter-$b" data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml --batching "$b"
  ev "dcrouter-costnoise0.5-$b" data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml --batching "$b" --cost-noise lognormal:0.5
done
# The same on SimpleQA with the old planning (point costs, κ = 0), without headroom, and with the
# no-price mode (Σ μ·x under each batch's grant), for the record.
ev "simpleqa-random-point-costs" data/pricing-reversal-simpleqa.jsonl.gz --batching random --no-chance
ev "simpleqa-random-headroom0" data/pricing-reversal-simpleqa.jsonl.gz --batching random --headroom 0
ev "simpleqa-random-no-dual-price" data/pricing-reversal-simpleqa.jsonl.gz --batching random --no-dual-price
# The cost model's calibration per dataset (estimator eval).
for d in pricing-reversal-simpleqa pricing-reversal-reasoning; do
  "$BIN/estimator" eval --records "data/$d.jsonl.gz" > "$OUT/estimator-$d.txt"
done
"$BIN/estimator" eval --records data/routellm.jsonl.gz --catalog deploy/catalogs/routellm.yaml > "$OUT/estimator-routellm.txt"
"$BIN/estimator" eval --records data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml > "$OUT/estimator-dcrouter.txt"
python3 scripts/real_cost_summary.py "$OUT" > docs/results/real-cost.md
# The same comparison over 6 splits (seeds) per dataset, with variants of the budget options
# (~2 min): one seed's matched-cost figures move by a point or more on the small sets.
python3 scripts/real_cost_seeds.py > docs/results/real-cost-seeds.txt
# The default estimator against the plain kNN reference (fast on each), over the same splits.
python3 scripts/real_cost_seeds.py --against fast@plain-knn --datasets simpleqa,reasoning,routellm,dcrouter \
  > docs/results/real-cost-seeds-plain.txt
python3 scripts/real_cost_seeds.py --batching adversarial --variant '' --datasets simpleqa,reasoning,routellm,dcrouter \
  > docs/results/real-cost-seeds-adversarial.txt
echo "wrote docs/results/real-cost.md" >&2
