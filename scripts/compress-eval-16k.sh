#!/usr/bin/env bash
# Perplexity on 16,384 held-out tokens of plays and of chat (128 windows × 128 tokens each; the
# worker's default is 16 × 128): SmolLM2-135M-Instruct pruned by the RUNs (default SparseGPT 2:4 and
# ALPS 2:4), chat-calibrated on 32 × 256 tokens, the held-out chat text being the dense model's
# answers to 256 held-out prompts (~45k tokens; windows at seeded random offsets, so some overlap).
#
#   bash scripts/compress-eval-16k.sh [RUN …]   # RUN = method:pattern
#
# Writes docs/results/compress-eval-16k.txt. ~8 min a run on 2 cores; not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n 2,9p "$0"; exit 0; fi
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(sparsegpt:2:4 alps:2:4)
set --  # worker-lib.sh passes its arguments to cargo
source scripts/worker-lib.sh
W=out/compress-eval-16k
mkdir -p "$W"
{
  echo "# bash scripts/compress-eval-16k.sh ${RUNS[*]}  ($(nproc) cores, $(date -u +%F))"
  for run in "${RUNS[@]}"; do
    IFS=: read -r method pat1 pat2 <<< "$run"
    pat="$pat1:$pat2" tag="$method-$pat1-$pat2"
    "$BIN" run --model "$MODEL" --method "$method" --pattern "$pat" --calibration chat --calib-n 32 --calib-len 256 \
      --chat-eval 256 --eval-n 128 --eval-len 128 --out "$W/$tag" 2> "$W/$tag.log" | head -1
    python3 - "$W/$tag/model-card.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
e = c["evaluation"]
print(f"  evaluated: plays {e['windows']} x {e['tokens_per_window']} tokens, chat {e['chat']['windows']} x "
      f"{e['chat']['tokens_per_window']} tokens of {e['chat']['conversations']} held-out conversations; "
      f"perplexity s: dense {c['wall_time_s']['perplexity_dense']:.0f}, pruned {c['wall_time_s']['perplexity_pruned']:.0f}")
PY
  done
} | tee docs/results/compress-eval-16k.txt
