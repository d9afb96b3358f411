#!/usr/bin/env bash
# Reproduces docs/results/: `llmroute-eval eval` on both datasets under random and adversarial
# batching, the binding-capacity and noisy-estimator cases, and the solver benchmark.
# The RouteLLM runs use the full conversion of ../shared/data/routellm (set SHARED to override).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
SHARED="${SHARED:-../shared/data}"
OUT=docs/results
mkdir -p "$OUT"
cargo build --release --bins
BIN="$CARGO_TARGET_DIR/release"
"$BIN/estimator" convert routellm --input "$SHARED/routellm" --catalog deploy/catalogs/routellm.yaml \
  --out "$OUT/routellm-full.jsonl.gz.tmp.jsonl.gz" 2>&1 | tail -1
RL="$OUT/routellm-full.jsonl.gz.tmp.jsonl.gz"
ALL=fast,mip,per-query-price,per-query-threshold,oracle
ev() { # name records catalog extra-args...
  local name=$1 rec=$2 cat=$3; shift 3
  echo "== $name" >&2
  "$BIN/llmroute-eval" eval --records "$rec" --catalog "$cat" --json-out "$OUT/$name.json" --plot "$OUT/$name.svg" "$@" > "$OUT/$name.txt"
}
for b in random adversarial; do
  ev "dcrouter-$b" data/dcrouter.jsonl.gz deploy/catalogs/dcrouter.yaml --assigners "$ALL" --batching "$b"
  ev "routellm-$b" "$RL" deploy/catalogs/routellm.yaml --assigners "$ALL" --batching "$b"
done
# Where batch-level should matter: binding capacity (mip left out: with 9 models and binding
# slots HiGHS runs into its time limit on many batches), and noisy estimates with and without Γ.
ev dcrouter-capacity data/dcrouter.jsonl.gz deploy/catalogs/dcrouter.yaml --assigners fast,per-query-price,oracle --capacity-frac 0.15
ev routellm-capacity "$RL" deploy/catalogs/routellm.yaml --assigners fast,mip,per-query-price,oracle --capacity-frac 0.6
for g in 0 4 16; do
  ev "dcrouter-noise0.15-gamma$g" data/dcrouter.jsonl.gz deploy/catalogs/dcrouter.yaml --assigners fast,per-query-price --estimator-noise 0.15 --gamma "$g"
done
ev dcrouter-no-dual-price-adversarial data/dcrouter.jsonl.gz deploy/catalogs/dcrouter.yaml --assigners fast,per-query-price --batching adversarial --no-dual-price
# The benchmark takes ~5 min (HiGHS' 1024-query robust solves); SKIP_BENCH=1 leaves it out.
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  "$BIN/llmroute-eval" bench-solver --json "$OUT/bench-solver.json" > "$OUT/bench-solver.txt"
fi
rm -f "$RL"
