#!/usr/bin/env bash
# Transposable N:M on SmolLM2-135M-Instruct (issue 17, item 2): SparseGPT at 2:4 and 4:8, Wanda at 2:4,
# plain and `--transposable`, chat calibration 32 × 256 tokens; perplexity on held-out plays and
# chat, the chat check (40 questions through llama.cpp), prune time and peak RSS from each card.
# Writes docs/results/compress-transposable.txt. ~18 min on 2 cores; not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh
W=out/compress-transposable
mkdir -p "$W"
for run in sparsegpt:2:4 sparsegpt:4:8 wanda:2:4; do
  method=${run%%:*} pat=${run#*:}
  for t in plain transposable; do
    tag="$method-${pat//:/-}-$t"
    extra=(); [ "$t" = transposable ] && extra=(--transposable)
    "$BIN" run --model "$MODEL" --method "$method" --pattern "$pat" "${extra[@]}" --calibration chat --calib-n 32 \
      --calib-len 256 --chat-eval 16 --chat-check 40 --out "$W/$tag" > "$W/$tag.txt" 2> "$W/$tag.log"
  done
done
python3 - "$W" <<'PY' | tee docs/results/compress-transposable.txt
import json, sys
w = sys.argv[1]
print("# SmolLM2-135M-Instruct, chat calibration 32 x 256 tokens, chat check 40 questions through llama.cpp "
      "(bash scripts/compress-transposable.sh)")
print(f"{'method':<10} {'pattern':<18} {'ppl plays':>10} {'ratio':>6} {'ppl chat':>9} {'ratio':>6} {'non-empty':>9} {'prune s':>8} {'RSS MB':>7}")
for method, pat in [("sparsegpt", "2:4"), ("sparsegpt", "4:8"), ("wanda", "2:4")]:
        for t in ["plain", "transposable"]:
            c = json.load(open(f"{w}/{method}-{pat.replace(':', '-')}-{t}/model-card.json"))
            p = c["perplexity"]
            plays, chat = p["plays"], p.get("chat") or {}
            stages = c.get("prune_stages_s") or {}
            print(f"{method:<10} {c['pattern_text']:<18} {plays['pruned']:>10.2f} {plays['ratio']:>6.2f} "
                  f"{chat.get('pruned', float('nan')):>9.2f} {chat.get('ratio', float('nan')):>6.2f} "
                  f"{(c.get('chat') or {}).get('nonempty_share', float('nan')):>9.3f} "
                  f"{c['wall_time_s'].get('prune', float('nan')):>8.1f} {c['peak_rss_mb']:>7.0f}")
PY
