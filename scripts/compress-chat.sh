#!/usr/bin/env bash
# Reproduces docs/results/compress-chat.txt (issue 17): does a pruned instruct model still chat?
# SmolLM2-135M-Instruct, SparseGPT 2:4, calibrated on 32 × 256 tokens of the Gutenberg plays vs of
# chat (the dense model's own answers to 32 RouteLLM prompts in its chat template,
# scripts/chat_calibration.py), each served by llama.cpp and asked 40 held-out questions
# (scripts/chat_check.py), with perplexity on held-out plays and on 16 held-out chat conversations;
# the dense model's chat check beside them. ~9 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh
OUT=docs/results/compress-chat.txt
mkdir -p out/compress-chat
{
  echo "# SmolLM2-135M-Instruct, SparseGPT 2:4, calibration 32 × 256 tokens, chat check: 40 questions of data/questions-gsm8k-mmlu.jsonl, greedy, max 96 tokens (bash scripts/compress-chat.sh)"
  echo "dense: $(python3 scripts/chat_check.py --model "$MODEL" --n 40)"
  for cal in plays chat; do
    "$BIN" run --model "$MODEL" --method sparsegpt --pattern 2:4 --calibration "$cal" --calib-n 32 --calib-len 256 --chat-eval 16 \
      --chat-check 40 --out "out/compress-chat/$cal" > "out/compress-chat/$cal.txt" 2> "out/compress-chat/$cal.log"
    echo "sparsegpt 2:4, $cal calibration: $(head -1 "out/compress-chat/$cal.txt")"
    echo "  chat: $(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['chat']))" "out/compress-chat/$cal/model-card.json")"
    cp "out/compress-chat/$cal/model-card.json" "docs/results/compress-sparsegpt-2-4-$cal-calibration.json"
  done
} | tee "$OUT"
