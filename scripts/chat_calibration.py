#!/usr/bin/env python3
"""On-policy chat calibration text for the compression worker (`compression-worker run --calibration chat`).

    python3 scripts/chat_calibration.py --model GGUF --out FILE [--n 32] [--skip 0] [--max-tokens 256]
                                        [--seed 7] [--prompts data/routellm.jsonl.gz]

Starts a llama.cpp server (scripts/llama_server.py, the model's own chat template through Jinja) on
the dense model, asks it `--n` prompts drawn (a seeded shuffle, from its `--skip`-th: the worker's
held-out chat text starts at 1000, past any calibration set) from a routing-records file — RouteLLM's
MMLU, GSM8K and MT-Bench prompts by default, which are not the questions the worker's chat check
and `estimator collect` ask (data/questions-gsm8k-mmlu.jsonl) — greedily, and writes each
conversation as the template renders it, answer and end-of-turn included, one after another, to
FILE. Calibrating on what the model itself says in its chat format keeps the chat behaviour (the
end-of-turn token after an answer, not at once) that plain-text calibration prunes away.
Progress on stderr; the last stderr line is a JSON summary.
"""
import argparse
import gzip
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from llama_server import post_json, serving  # scripts/llama_server.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINEL = "\u2063LLMROUTE-NEXT-TURN\u2063"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="dense GGUF (or smollm2 / gemma3)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=32, help="conversations")
    ap.add_argument("--skip", type=int, default=0, help="prompts of the shuffle to pass over first")
    ap.add_argument("--max-tokens", type=int, default=256, help="longest answer")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--prompts", default=os.path.join(ROOT, "data/routellm.jsonl.gz"))
    ap.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    a = ap.parse_args()
    if a.n < 1:
        sys.exit("--n must be at least 1")
    opener = gzip.open if a.prompts.endswith(".gz") else open
    with opener(a.prompts, "rt") as f:
        prompts = [json.loads(l)["prompt"] for l in f if l.strip()]
    prompts = [p for p in prompts if 0 < len(p) <= 1500]
    random.Random(a.seed).shuffle(prompts)
    prompts = prompts[a.skip : a.skip + a.n]
    if len(prompts) < a.n:
        sys.exit(f"{a.prompts}: only {len(prompts)} prompts from {a.skip}")
    t0 = time.time()
    with serving(a.model, "--parallel", "2", "--jinja", "--ctx", "4096", port=a.port) as port:
        done = [0]

        def one(p):
            r = post_json(port, "/v1/chat/completions",
                     {"messages": [{"role": "user", "content": p}], "max_tokens": a.max_tokens, "temperature": 0})
            answer = r["choices"][0]["message"].get("content") or ""
            # The template's rendering of the whole turn, end-of-turn included: render it followed by
            # one more user turn and cut where that turn's text starts.
            msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": answer},
                    {"role": "user", "content": SENTINEL}]
            text = post_json(port, "/apply-template", {"messages": msgs})["prompt"]
            cut = text.find(SENTINEL)
            done[0] += 1
            print(f"chat calibration: {done[0]}/{len(prompts)} conversations, {time.time() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            return (text[:cut] if cut >= 0 else text), bool(answer.strip())

        with ThreadPoolExecutor(2) as ex:
            convs = list(ex.map(one, prompts))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(t for t, _ in convs))
    os.replace(tmp, a.out)
    print(json.dumps({"conversations": len(convs), "empty_answers": sum(1 for _, ok in convs if not ok),
                      "chars": sum(len(t) for t, _ in convs), "seconds": round(time.time() - t0, 1), "out": a.out}),
          file=sys.stderr)


if __name__ == "__main__":
    main()
