#!/usr/bin/env python3
"""Does a (pruned) model still chat? Serves a GGUF with llama.cpp and asks it held-out questions.

    python3 scripts/chat_check.py --model GGUF [--n 40] [--max-tokens 96]
                                  [--questions data/questions-gsm8k-mmlu.jsonl]

Starts scripts/llama_server.py (the model's own chat template through Jinja), asks the first `--n`
questions greedily, and prints one JSON object: `nonempty_share` (answers with any text),
`stopped_share` (answers that ended by themselves, not at --max-tokens), `accuracy` (graded as
`estimator collect` grades: the final number for `number` questions, the chosen letter for
`choice`), `by_task` (n and accuracy per the questions' `task`), `n`, `seconds`. The compression worker runs it on its output (`--chat-check N`) and
records it in the model card as `chat`.
"""
import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from llama_server import post_json, serving  # scripts/llama_server.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text):
    nums = NUM.findall(text)
    if not nums:
        return None
    try:
        return float(nums[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def chosen_letter(text):
    m = re.search(r"(?:answer(?: is)?|^)\s*[:\(]?\s*\(?([A-D])\b", text, re.IGNORECASE | re.MULTILINE)
    if m:
        return m.group(1).upper()
    m = re.search(r"\b([A-D])\b", text)
    return m.group(1) if m else None


def grade(q, answer):
    if q.get("grader") == "number":
        got, want = final_number(answer), final_number(q["answer"])
        return float(got is not None and want is not None and abs(got - want) < 1e-6)
    if q.get("grader") == "choice":
        return float(chosen_letter(answer) == q["answer"].strip().upper()[:1])
    return float(answer.strip().lower() == q["answer"].strip().lower())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--lora", metavar="FILE", help="a LoRA adapter GGUF llama.cpp applies on top of --model")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--questions", default=os.path.join(ROOT, "data/questions-gsm8k-mmlu.jsonl"))
    a = ap.parse_args()
    with open(a.questions, encoding="utf-8") as f:
        qs = [json.loads(l) for l in f if l.strip()][: a.n]
    if not qs:
        sys.exit(f"{a.questions}: no questions")
    t0 = time.time()
    extra = ["--lora", a.lora] if a.lora else []
    with serving(a.model, "--parallel", "2", "--jinja", *extra) as port:

        def ask(q):
            body = {"messages": [{"role": "user", "content": q["prompt"]}], "max_tokens": a.max_tokens,
                    "temperature": 0}
            c = post_json(port, "/v1/chat/completions", body)["choices"][0]
            return (c["message"].get("content") or ""), c.get("finish_reason")

        with ThreadPoolExecutor(2) as ex:
            answers = list(ex.map(ask, qs))
    n = len(answers)
    by_task = {}
    for q, (t, _) in zip(qs, answers):
        d = by_task.setdefault(q.get("task", "all"), {"n": 0, "correct": 0.0})
        d["n"] += 1
        d["correct"] += grade(q, t)
    print(json.dumps({
        "n": n,
        "nonempty_share": sum(1 for t, _ in answers if t.strip()) / n,
        "stopped_share": sum(1 for _, f in answers if f == "stop") / n,
        "accuracy": sum(grade(q, t) for q, (t, _) in zip(qs, answers)) / n,
        "by_task": {k: {"n": d["n"], "accuracy": d["correct"] / d["n"]} for k, d in sorted(by_task.items())},
        "max_tokens": a.max_tokens,
        "questions": os.path.relpath(a.questions, ROOT) if a.questions.startswith(ROOT) else a.questions,
        "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
