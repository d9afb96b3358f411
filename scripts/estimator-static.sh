#!/usr/bin/env bash
# Static embeddings distilled from MiniLM (issue 16, item 4) against hashed TF-IDF features and
# full MiniLM, on every vendored dataset → docs/results/estimator-static.txt (+ the raw outputs in
# docs/results/static/):
#  - `estimator distill-static` (its time and the PCA's kept variance);
#  - `estimator bench --static-table`: static embeddings per second, static-kNN predictions per
#    second, beside the hashed path and MiniLM's embedding rate;
#  - `estimator eval` (70/30 split, seed 1): validation Brier, mean test AUC and argmax-μ accuracy
#    per embedder, kNN alone and with the MLP head, and the plain TF-IDF kNN reference;
#  - routed accuracy: an artifact per embedder (same split), `llmroute-eval eval` with `fast` at
#    spends 0.05 / 0.1 / 0.2 (95 % CIs), the same test batches for each.
# MiniLM rows need `--minilm` (embeds every prompt once, ~18 prompts/s here: ~20 min for the four
# datasets; cached in out/embeddings-minilm-*.bin, so reruns are quick).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
MINILM=0
for a in "$@"; do
  case "$a" in
    --minilm) MINILM=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
  esac
done
cargo build --release --bins -q
# A private copy of the binaries: a rebuild while this runs does not change them mid-way.
BIN="$(mktemp -d)"
trap 'rm -rf "$BIN"' EXIT
cp "$CARGO_TARGET_DIR/release/estimator" "$CARGO_TARGET_DIR/release/llmroute-eval" "$BIN/"
OUT=docs/results
RAW="$OUT/static"
mkdir -p "$RAW" out
TABLE=out/static-minilm.bin
SUM="$OUT/estimator-static.txt"
{
  echo "# Static embeddings distilled from MiniLM vs hashed TF-IDF vs MiniLM (bash scripts/estimator-static.sh$([ $MINILM = 1 ] && echo ' --minilm'))"
  echo "# $(date -u +%Y-%m-%d) on $(nproc) cores; commit $(git rev-parse --short HEAD)"
  echo
  echo "## Distillation"
  "$BIN/estimator" distill-static --out "$TABLE" 2> "$RAW/distill.log"
  echo
  echo "## Speed (estimator bench --records data/dcrouter.jsonl.gz --terms 0,32 --threads 1 --static-table $TABLE --n 128)"
  "$BIN/estimator" bench --records data/dcrouter.jsonl.gz --terms 0,32 --threads 1 --static-table "$TABLE" --n 128 \
    | grep -v "^  per prediction" | grep -v "MiniLM embed, batch  [18] "
} > "$SUM"

datasets=(dcrouter routellm pricing-reversal-simpleqa pricing-reversal-reasoning)
catalog_args() {
  case "$1" in
    dcrouter|routellm) echo "--catalog deploy/catalogs/$1.yaml" ;;
    *) echo "" ;;
  esac
}
embedders=(hashed static)
[ $MINILM = 1 ] && embedders+=(minilm)
emb_args() {
  case "$1" in
    hashed) echo "" ;;
    static) echo "--embedder static --static-table $TABLE" ;;
    minilm) echo "--embedder minilm --embedding-cache out/embeddings-minilm-$2.bin" ;;
  esac
}
{
  echo
  echo "## estimator eval (train 0.7, seed 1): validation Brier of the kNN, mean test AUC over models, argmax-μ accuracy"
  printf '%-28s %-8s %-5s %10s %9s %9s %10s\n' dataset embedder head "val Brier" "mean AUC" "argmax" "plain-kNN"
} >> "$SUM"
for ds in "${datasets[@]}"; do
  for e in "${embedders[@]}"; do
    for head in none mlp; do
      f="$RAW/eval-$ds-$e-$head.txt"
      # shellcheck disable=SC2046
      "$BIN/estimator" eval --records "data/$ds.jsonl.gz" $(catalog_args "$ds") $(emb_args "$e" "$ds") --head "$head" > "$f" 2> "$f.log"
      brier=$(grep -o 'Brier kNN [0-9.]*' "$f" | awk '{print $3}')
      auc=$(awk '/^model /{on=1; next} on && NF >= 10 && $3 ~ /^[0-9.]+$/ {s += $3; n++} /^\(cover/{on=0} END {if (n) printf "%.4f", s / n}' "$f")
      acc=$(grep -o '^argmax-μ accuracy [0-9.]*' "$f" | awk '{print $3}')
      plain=$(grep -o 'reference .*argmax-μ accuracy [0-9.]*' "$f" | awk '{print $NF}')
      printf '%-28s %-8s %-5s %10s %9s %9s %10s\n' "$ds" "$e" "$head" "$brier" "$auc" "$acc" "$plain" >> "$SUM"
    done
  done
done

{
  echo
  echo "## Routed accuracy: llmroute-eval eval --assigners fast --spend 0.05,0.1,0.2 --estimator-artifact (trained on the same 0.7 split, seed 1, default head)"
  printf '%-28s %-8s %6s %12s %8s %18s %8s\n' dataset embedder spend "real \$/q" acc "95% CI" "over"
} >> "$SUM"
for ds in "${datasets[@]}"; do
  for e in "${embedders[@]}"; do
    art="out/est-static-cmp-$ds-$e.json.gz"
    # shellcheck disable=SC2046
    "$BIN/estimator" train --records "data/$ds.jsonl.gz" $(catalog_args "$ds") $(emb_args "$e" "$ds") \
      --train-frac 0.7 --seed 1 --out "$art" > /dev/null 2> "$RAW/train-$ds-$e.log"
    f="$RAW/route-$ds-$e.txt"
    extra=()
    [ "$e" = minilm ] && extra+=(--embedding-cache "out/embeddings-minilm-$ds.bin")
    # The reasoning set is small (as in scripts/results-real-cost.sh).
    [ "$ds" = pricing-reversal-reasoning ] && extra+=(--batch-size 16)
    # shellcheck disable=SC2046
    "$BIN/llmroute-eval" eval --records "data/$ds.jsonl.gz" $(catalog_args "$ds") --assigners fast \
      --spend 0.05,0.1,0.2 --estimator-artifact "$art" "${extra[@]}" > "$f" 2> "$f.log"
    awk -v ds="$ds" -v e="$e" '$1 == "fast" && NF >= 9 && $2 ~ /^0\./ {
        printf "%-28s %-8s %6s %12s %8s %18s %8s\n", ds, e, $2, $4, $5, $6 " " $7, $9 "/" $8 }' "$f" >> "$SUM"
  done
done
echo "wrote $SUM" >&2
