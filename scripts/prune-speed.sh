#!/usr/bin/env bash
# Reproduces docs/results/prune-speed.txt (issue 17 item 5): the SparseGPT pieces on SmolLM2-135M's
# shapes (examples/prune_bench.rs), then SmolLM2-135M-Instruct pruned by SparseGPT 2:4 on the
# default 16 × 128 plays tokens, twice, with the prune phase's stages from the model card. ~3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh --bins --examples
mkdir -p out/prune-speed
{
  echo "# cargo run --release -p compression-worker --example prune_bench ($(nproc) cores)"
  "$CARGO_TARGET_DIR/release/examples/prune_bench" 3
  for i in 1 2; do
    "$BIN" run --model "$MODEL" --method sparsegpt --pattern 2:4 --calibration plays --out out/prune-speed/run$i 2>/dev/null | head -1
    python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print('  prune stages (s):', json.dumps({k: round(v, 1) for k, v in c['prune_stages_s'].items()}), ' prune', round(c['wall_time_s']['prune'], 1))" out/prune-speed/run$i/model-card.json
  done
} | tee docs/results/prune-speed.txt
