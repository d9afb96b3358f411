#!/usr/bin/env python3
"""Build a graded question set for `estimator collect` from the shared routing data.

    python3 scripts/make_questions.py --shared ../shared/data --gsm8k 100 --mmlu 100 --seed 1 \
        --out data/questions-gsm8k-mmlu.jsonl

GSM8K: questions and their `#### N` answers from llmrouter-dcrouter (grader `number`).
MMLU: the RouteLLM prompt (question + lettered choices + "Answer:") joined with the answer letter
that llmrouter-dcrouter records for the same question (grader `choice`); only questions whose
text matches exactly one RouteLLM prompt are used. Output: JSONL {id, task, prompt, answer, grader}.
"""
import argparse
import csv
import json
import random
import re
import sys

csv.field_size_limit(10**9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared/data", help="the shared data folder")
    ap.add_argument("--gsm8k", type=int, default=100)
    ap.add_argument("--mmlu", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    rows = list(csv.DictReader(open(f"{a.shared}/llmrouter-dcrouter/dcrouter_wide.csv", encoding="utf-8")))
    gsm = []
    for r in rows:
        if r["task_name"] != "gsm8k":
            continue
        m = re.search(r"####\s*([-0-9.,]+)\s*$", r["ground_truth"])
        if not m:
            continue
        gsm.append({"id": f"gsm8k-{r['split']}-{r['idx_in_split']}", "task": "gsm8k",
                    "prompt": r["question"].strip(), "answer": m.group(1).replace(",", ""), "grader": "number"})

    prompts = {}
    for r in csv.DictReader(open(f"{a.shared}/routellm/mmlu_all.csv", encoding="utf-8")):
        prompts.setdefault(r["prompt"], r["subject"])
    by_question = {}
    for p, subject in prompts.items():
        q = p.split("\nA. ")[0].strip()
        by_question.setdefault(q, []).append((p, subject))
    mmlu = []
    for r in rows:
        if r["task_name"] != "mmlu" or r["ground_truth"] not in ("A", "B", "C", "D"):
            continue
        hits = by_question.get(r["question"].strip(), [])
        if len(hits) != 1:
            continue
        p, subject = hits[0]
        mmlu.append({"id": f"mmlu-{r['split']}-{r['idx_in_split']}", "task": f"mmlu/{subject}",
                     "prompt": p, "answer": r["ground_truth"], "grader": "choice"})

    rng = random.Random(a.seed)
    rng.shuffle(gsm)
    rng.shuffle(mmlu)
    if len(gsm) < a.gsm8k or len(mmlu) < a.mmlu:
        sys.exit(f"only {len(gsm)} GSM8K and {len(mmlu)} MMLU questions available")
    out = gsm[: a.gsm8k] + mmlu[: a.mmlu]
    with open(a.out, "w", encoding="utf-8") as f:
        for q in out:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} questions ({a.gsm8k} GSM8K of {len(gsm)}, {a.mmlu} MMLU of {len(mmlu)}) to {a.out}")


if __name__ == "__main__":
    main()
