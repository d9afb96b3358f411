#!/usr/bin/env python3
"""How the priced batch assigner (`fast`) compares with per-query pricing over many splits.

(`--against fast@plain-knn`: how `fast` on the default estimator compares with `fast` on the
plain TF-IDF kNN reference, the same way.)

One `llmroute-eval eval` split (one seed) of a small real-cost dataset moves the matched-cost
difference by a point or more; this runs every dataset over several seeds and reports, per
dataset and per variant of the eval's options:

- AIQ Δ: fast − per-query-price mean accuracy over the common cost range (mean and worst seed);
- worst Δ: the most negative matched-cost difference of each seed (mean and worst seed);
- over: fast's batches over their grant, all seeds and spends together;
- spent/target: fast's realized mean cost over its target, averaged over spends and seeds;
- roll: fast's largest rolling overspend.

Usage: scripts/real_cost_seeds.py [--seeds N] [--datasets a,b] [--variant "ARGS"]...
Each --variant is a string of extra eval arguments ("" = the defaults); with none given the
defaults and the variants of docs/results/real-cost-seeds.txt run. Random batching unless
--batching says otherwise, spends 0.05, 0.1, 0.2 and 0.5. Needs the release binaries (cargo build --release --bins).
"""
import argparse
import json
import os
import shlex
import statistics as st
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/llmroute-target"))
EVAL = os.path.join(TARGET, "release", "llmroute-eval")
DATASETS = {
    "simpleqa": ["data/pricing-reversal-simpleqa.jsonl.gz"],
    "reasoning": ["data/pricing-reversal-reasoning.jsonl.gz", "--batch-size", "16"],
    "routellm": ["data/routellm.jsonl.gz", "--catalog", "deploy/catalogs/routellm.yaml"],
    "dcrouter": ["data/dcrouter.jsonl.gz", "--catalog", "deploy/catalogs/dcrouter.yaml"],
    "local-llama": ["data/collected-local-llama.jsonl", "--batch-size", "16"],
}
DEFAULT_VARIANTS = ["", "--ration price", "--no-chance", "--headroom 0", "--headroom 0.5", "--pacing 0.1"]


def run(ds, seed, extra, tmp, against, batching):
    args = DATASETS[ds]
    out = os.path.join(tmp, "r.json")
    cmd = [EVAL, "eval", "--records", args[0], *args[1:], "--batching", batching,
           "--assigners", f"fast,{against}", "--spend", "0.05,0.1,0.2,0.5", "--seed", str(seed),
           "--bootstrap", "20", "--json-out", out, *extra]
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    with open(out) as f:
        d = json.load(f)
    fast = [r for r in d["results"] if r["assigner"] == "fast"]
    at = {}
    for m in d["matched"]:
        at.setdefault(m["cost"], {})[m["assigner"]] = m["accuracy"]
    diffs = [a["fast"] - a[against] for a in at.values() if "fast" in a and against in a]
    return {
        "worst": min(diffs) if diffs else 0.0,
        "aiq": d["aiq"].get("fast", 0.0) - d["aiq"].get(against, 0.0),
        "over": sum(r["batches_over_budget"] for r in fast),
        "batches": sum(r["batches"] for r in fast),
        "spent": st.mean(r["mean_cost"] / r["target_cost"] for r in fast),
        "roll": max(r["rolling_overspend"] for r in fast),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6, help="splits per dataset: seeds 1..N (default 6)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {', '.join(DATASETS)} (default all)")
    ap.add_argument("--variant", action="append", help='extra eval arguments, e.g. "--headroom 0"')
    ap.add_argument("--batching", default="random", choices=["random", "adversarial", "by-task"],
                    help="the test traffic's order (default random)")
    ap.add_argument("--against", default="per-query-price", choices=["per-query-price", "fast@plain-knn"],
                    help="what fast is compared with (default per-query-price)")
    a = ap.parse_args()
    if a.seeds < 1:
        ap.error("--seeds must be at least 1")
    if not os.path.exists(EVAL):
        sys.exit(f"{EVAL} not found: cargo build --release --bins first")
    datasets = a.datasets.split(",")
    for d in datasets:
        if d not in DATASETS:
            sys.exit(f"unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    variants = a.variant if a.variant is not None else (DEFAULT_VARIANTS if a.against == "per-query-price" else [""])
    print(f"seeds 1..{a.seeds}, {a.batching} batching, spends 0.05/0.1/0.2/0.5; Δ in accuracy points (fast − {a.against})")
    print(f"{'dataset':12s} {'variant':18s} {'AIQ Δ mean':>10s} {'AIQ Δ min':>9s} {'worst Δ mean':>12s} {'worst Δ min':>11s} {'over':>9s} {'spent/target':>12s} {'roll':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            for ds in datasets:
                rs = [run(ds, s, shlex.split(v), tmp, a.against, a.batching) for s in range(1, a.seeds + 1)]
                aiq = [r["aiq"] * 100 for r in rs]
                worst = [r["worst"] * 100 for r in rs]
                over = f"{sum(r['over'] for r in rs)}/{sum(r['batches'] for r in rs)}"
                print(f"{ds:12s} {v or '(defaults)':18s} {st.mean(aiq):+10.2f} {min(aiq):+9.2f} {st.mean(worst):+12.2f} {min(worst):+11.2f} {over:>9s} {st.mean(r['spent'] for r in rs):12.2f} {max(r['roll'] for r in rs):6.3f}", flush=True)


if __name__ == "__main__":
    main()
