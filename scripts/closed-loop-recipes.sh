#!/usr/bin/env bash
# Which pruning recipe keeps the most task accuracy (the closed loop's default, issue 18)? Prunes
# SmolLM2-135M-Instruct with SparseGPT, chat calibration 32 × 256 tokens, at unstructured 0.3 / 0.5,
# 4:8 and 2:4, serves each on llama.cpp and grades 48 seeded arithmetic questions
# (scripts/arith_questions.py --n 48 --seed 99, answers capped at 64 tokens) beside the dense model.
# Writes docs/results/closed-loop-recipes.txt. ~12 min on 2 cores; not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/worker-lib.sh
W=$(mktemp -d /tmp/llmroute-recipes.XXXXXX)
python3 scripts/arith_questions.py --n 48 --seed 99 --out "$W/questions.jsonl"
for pat in unstructured:0.3 unstructured:0.5 4:8 2:4; do
  "$BIN" run --model "$MODEL" --method sparsegpt --pattern "$pat" --calibration chat --calib-n 32 --calib-len 256 \
    --out "$W/${pat//:/-}" > "$W/${pat//:/-}.txt" 2> "$W/${pat//:/-}.log"
done
python3 - "$W" "$MODEL" <<'PY' | tee docs/results/closed-loop-recipes.txt
import glob, json, os, subprocess, sys
sys.path.insert(0, "scripts")
import llama_server
w, dense = sys.argv[1:]
est = os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "estimator")
print("# SmolLM2-135M-Instruct pruned by SparseGPT (chat calibration 32 x 256), 48 arithmetic questions "
      "(scripts/arith_questions.py --n 48 --seed 99), greedy, max 64 tokens: bash scripts/closed-loop-recipes.sh")
print(f"{'model':<24} {'answered':>8} {'failed':>6} {'accuracy':>9} {'mean tokens':>11} {'mean latency':>12} {'cost USD':>12}   perplexity (worker)")
for tag in ["dense", "unstructured-0.3", "unstructured-0.5", "4-8", "2-4"]:
    gguf = dense if tag == "dense" else glob.glob(f"{w}/{tag}/*.gguf")[0]
    with llama_server.serving(gguf) as port:
        cat = f"{w}/{tag}-catalog.yaml"
        json.dump({"name": "x", "models": [{"name": tag, "backend": f"http://127.0.0.1:{port}",
                                            "price_in_per_mtok": 0.1, "price_out_per_mtok": 0.1}]}, open(cat, "w"))
        out = subprocess.run([est, "collect", "--catalog", cat, "--questions", f"{w}/questions.jsonl",
                              "--out", f"{w}/{tag}-records.jsonl", "--max-tokens", "64"],
                             capture_output=True, text=True, check=True).stdout
    ppl = "" if tag == "dense" else open(f"{w}/{tag}.txt").readline().split(": ", 1)[1].split(";")[0]
    print(out.splitlines()[1], "  ", ppl, flush=True)
PY
