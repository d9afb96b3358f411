#!/usr/bin/env python3
"""Per-model (and per task family) accuracy, tokens, latency and cost of collected records.

    python3 scripts/collected_accuracy.py data/collected-local-llama.jsonl
"""
import collections
import gzip
import json
import sys

path = sys.argv[1]
opener = gzip.open if path.endswith(".gz") else open
stats = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
with opener(path, "rt", encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        fam = (r.get("task") or "unknown").split("/")[0]
        for m, o in r["outcomes"].items():
            for key in ((m, "all"), (m, fam)):
                s = stats[key]
                s[0] += 1
                s[1] += o["score"]
                s[2] += o.get("output_tokens") or 0
                s[3] += o.get("latency_ms") or 0.0
                s[4] += o.get("cost_usd") or 0.0
print(f"{'model':<16} {'tasks':<7} {'n':>4} {'accuracy':>9} {'out tokens':>11} {'latency ms':>11} {'cost USD':>10}")
for (m, fam), (n, sc, tok, lat, cost) in sorted(stats.items()):
    print(f"{m:<16} {fam:<7} {n:>4} {sc / n:>9.3f} {tok / n:>11.1f} {lat / n:>11.0f} {cost:>10.6f}")
