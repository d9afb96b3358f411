#!/usr/bin/env python3
"""Seeded grade-school arithmetic questions (GSM8K-style, graded `number`) that models of 135M-270M
parameters can sometimes answer: real GSM8K is beyond them (measured: SmolLM2-135M 0.7 %,
Gemma-3-270M 0 %, docs/results/collect-local-llama-accuracy.txt), so a closed loop on it routes
between models that are all wrong. Eight kinds, from one-step sums to two-step word problems;
the kind is the record's task, so the estimator can learn which model handles which.

    python3 scripts/arith_questions.py --n 400 --seed 7 --out questions.jsonl

Output: JSONL {id, task, prompt, answer, grader: "number"}, the format `estimator collect` reads.
"""
import argparse
import json
import random

NAMES = ["Sam", "Mia", "Ravi", "Lena", "Omar", "Ines", "Tom", "Yuki", "Ada", "Noor"]
ITEMS = ["apples", "pens", "stickers", "marbles", "books", "cards", "shells", "coins"]
SUFFIX = " Answer with the number only."


def one(kind: str, rng: random.Random) -> tuple[str, int]:
    """One question of a kind: (prompt, answer)."""
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
    who, what = rng.choice(NAMES), rng.choice(ITEMS)
    if kind == "arith-add":
        return f"What is {a} + {b}?", a + b
    if kind == "arith-sub":
        return f"What is {a + b} - {b}?", a
    if kind == "arith-mul":
        return f"What is {a} times {c}?", a * c
    if kind == "word-add":
        return f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?", a + b
    if kind == "word-sub":
        return f"{who} had {a + b} {what} and gave away {b}. How many {what} are left?", a
    if kind == "word-mul":
        return f"A box holds {c} {what}. How many {what} are in {a} boxes?", a * c
    if kind == "word-two-step":
        return (
            f"{who} has {a} {what}, buys {b} more and then gives away {c}. How many {what} does {who} have?",
            a + b - c,
        )
    if kind == "arith-big":
        x, y = rng.randint(100, 999), rng.randint(100, 999)
        return f"What is {x} + {y}?", x + y
    raise ValueError(kind)


KINDS = ["arith-add", "arith-sub", "arith-mul", "arith-big", "word-add", "word-sub", "word-mul", "word-two-step"]


def questions(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        prompt, answer = one(kind, rng)
        out.append({"id": f"arith-{seed}-{i}", "task": kind, "prompt": prompt + SUFFIX, "answer": str(answer), "grader": "number"})
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="number of questions")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.n < 1:
        ap.error("--n must be at least 1")
    with open(a.out, "w", encoding="utf-8") as f:
        for q in questions(a.n, a.seed):
            f.write(json.dumps(q) + "\n")


if __name__ == "__main__":
    main()
