#!/usr/bin/env bash
# The allocator on the realistic example in deploy/examples/ (4 GPU types, 9 dcrouter models,
# 10 traffic classes, 196 q/s): for no per-query budget and for the router's budget at 5e-5 and
# 3e-5 USD/query, the optimized plan beside uniform and proportional plans with the same GPUs,
# then the replay simulation of all three (120 s of traffic); the manifests of the first plan; the
# solve-time benchmark (20 models x 4 GPU types x 10 classes, 20 seeds).
# Writes docs/results/allocator-*.txt|json and out/plan-*.yaml, out/k8s/. ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin allocator
A="$CARGO_TARGET_DIR/release/allocator"
mkdir -p out docs/results
ex=deploy/examples
for budget in none 0.00005 0.00003; do
  extra=(); [ "$budget" = none ] || extra=(--catalog deploy/catalogs/dcrouter.yaml --budget-per-query "$budget")
  {
    echo "### allocator plan (budget per query: $budget)"
    "$A" plan --inventory $ex/inventory.yaml --models $ex/models.yaml --traffic $ex/traffic.yaml \
      --records data/dcrouter.jsonl.gz --baseline uniform,proportional --out "out/plan-$budget.yaml" "${extra[@]}" 2>&1
    echo
    echo "### allocator simulate"
    "$A" simulate --plan "out/plan-$budget.yaml" --records data/dcrouter.jsonl.gz \
      --catalog deploy/catalogs/dcrouter.yaml --duration 120 --json "docs/results/allocator-simulate-$budget.json" 2>/dev/null
  } | tee "docs/results/allocator-$budget.txt"
done
"$A" manifests --plan out/plan-none.yaml --out out/k8s
"$A" bench --models 20 --gpus 4 --classes 10 --reps 20 | tee docs/results/allocator-bench.txt
