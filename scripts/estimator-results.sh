#!/usr/bin/env bash
# Reproduces the estimator figures in docs/results/ (issue 4):
#  - `estimator eval` on both vendored datasets: hashed kNN (baseline), hashed + MLP head,
#    MiniLM kNN, MiniLM + MLP head (the chooser picks per dataset), and output tokens on GSM8K;
#  - estimator artifacts trained on the eval split (`estimator train`), and `llmroute-eval eval`
#    at spends 0.05 / 0.1 / 0.2 with each artifact vs the baseline kNN, and Γ > 0 vs Γ = 0 under
#    --estimator-noise with the trained estimator;
#  - per-model accuracy of the records collected from live servers (data/collected-local-llama.jsonl);
#  - `estimator bench`.
# MiniLM embeddings are cached in out/ (the first run embeds ~12k prompts: ~10–20 min here).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
OUT=docs/results
mkdir -p "$OUT" out
cargo build --release --bins -q
BIN="$CARGO_TARGET_DIR/release"
DC=(--records data/dcrouter.jsonl.gz --catalog deploy/catalogs/dcrouter.yaml)
RL=(--records data/routellm.jsonl.gz --catalog deploy/catalogs/routellm.yaml)
cache() { echo "out/embeddings-minilm-$1.bin"; }
for ds in dcrouter routellm; do
  if [ "$ds" = dcrouter ]; then A=("${DC[@]}"); else A=("${RL[@]}"); fi
  C=$(cache "$ds")
  echo "== estimator eval $ds" >&2
  "$BIN/estimator" eval "${A[@]}" --head none > "$OUT/estimator-$ds-hashed-knn.txt"
  "$BIN/estimator" eval "${A[@]}" > "$OUT/estimator-$ds-hashed-mlp.txt"
  "$BIN/estimator" eval "${A[@]}" --embedder minilm --embedding-cache "$C" --head none > "$OUT/estimator-$ds-minilm-knn.txt"
  "$BIN/estimator" eval "${A[@]}" --embedder minilm --embedding-cache "$C" > "$OUT/estimator-$ds-minilm-mlp.txt"
  echo "== artifacts + llmroute-eval eval $ds" >&2
  "$BIN/estimator" train "${A[@]}" --train-frac 0.7 --seed 1 --out "out/est-$ds-hashed.json.gz"
  "$BIN/estimator" train "${A[@]}" --train-frac 0.7 --seed 1 --embedder minilm --embedding-cache "$C" \
    --out "out/est-$ds-minilm.json.gz"
  ev() { local name=$1; shift; "$BIN/llmroute-eval" eval "${A[@]}" --assigners fast,per-query-price,oracle \
    --spend 0.05,0.1,0.2 --json-out "$OUT/$name.json" "$@" > "$OUT/$name.txt"; }
  ev "est-$ds-baseline"
  ev "est-$ds-hashed" --estimator-artifact "out/est-$ds-hashed.json.gz"
  ev "est-$ds-minilm" --estimator-artifact "out/est-$ds-minilm.json.gz" --embedding-cache "$C"
done
"$BIN/estimator" eval "${RL[@]}" --only-task gsm8k > "$OUT/estimator-routellm-gsm8k-tokens.txt"
for g in 0 4 16; do
  "$BIN/llmroute-eval" eval "${DC[@]}" --assigners fast --spend 0.05,0.1,0.2 --estimator-noise 0.15 --gamma "$g" \
    --estimator-artifact out/est-dcrouter-hashed.json.gz --json-out "$OUT/est-dcrouter-noise0.15-gamma$g.json" \
    > "$OUT/est-dcrouter-noise0.15-gamma$g.txt"
done
python3 scripts/collected_accuracy.py data/collected-local-llama.jsonl > "$OUT/collect-local-llama-accuracy.txt"
"$BIN/estimator" bench --records data/dcrouter.jsonl.gz --doc-terms 0,24 > "$OUT/estimator-bench.txt"
