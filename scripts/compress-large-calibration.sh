#!/usr/bin/env bash
# Issue 17's tested size settings: SparseGPT 2:4 on SmolLM2-135M-Instruct calibrated on 128 × 512
# tokens of plays (65,536 tokens) and evaluated on 128 × 128 held-out plays tokens (16,384), beside
# the default 16 × 128 / 16 × 128 — perplexity, prune phase seconds and its stages, peak RSS.
# Writes docs/results/compress-large-calibration.txt. ~8 min on 2 cores; not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh
W=out/compress-large-calibration
mkdir -p "$W"
{
  echo "# SmolLM2-135M-Instruct, SparseGPT 2:4, plays calibration (bash scripts/compress-large-calibration.sh)"
  for size in "16 128" "128 512"; do
    set -- $size
    tag="calib-$1x$2"
    "$BIN" run --model "$MODEL" --method sparsegpt --pattern 2:4 --calibration plays --calib-n "$1" --calib-len "$2" \
      --eval-n 128 --eval-len 128 --out "$W/$tag" > "$W/$tag.txt" 2> "$W/$tag.log"
    echo "calibration $1 × $2 tokens, evaluation 128 × 128 tokens: $(head -1 "$W/$tag.txt")"
    python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print('  prune stages (s):', json.dumps(c.get('prune_stages_s')))" "$W/$tag/model-card.json"
  done
} | tee docs/results/compress-large-calibration.txt
