#!/usr/bin/env bash
# The heaviest-terms cut of kNN retrieval (estimator.max_query_terms) on every vendored data set:
# argmax-μ accuracy, mean AUC and mean Brier over the models (estimator eval, 70/30 split, kNN
# without head) for all terms, 32 and 16; and predictions/s per thread (estimator bench) on
# dcrouter. Writes docs/results/estimator-terms.txt (~2 min).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin estimator -q
BIN="$CARGO_TARGET_DIR/release/estimator"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for ds in dcrouter routellm pricing-reversal-simpleqa pricing-reversal-reasoning; do
  for t in 0 32 16; do
    "$BIN" eval --records "data/$ds.jsonl.gz" --head none --max-query-terms "$t" --json > "$tmp/$ds-$t.json"
  done
done
{
  python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
print("# kNN retrieval on all query terms or the heaviest 32 / 16 (estimator eval, 70/30 split, no head)")
print(f"{'data':<28} {'terms':>5} {'argmax-μ acc':>13} {'mean AUC':>9} {'mean Brier':>11}")
for ds in ("dcrouter", "routellm", "pricing-reversal-simpleqa", "pricing-reversal-reasoning"):
    for t in (0, 32, 16):
        r = json.load(open(f"{tmp}/{ds}-{t}.json"))
        ms = r["models"]
        auc = sum(m["auc"] or 0 for m in ms) / len(ms)
        brier = sum(m["brier"] for m in ms) / len(ms)
        print(f"{ds:<28} {'all' if t == 0 else t:>5} {r['argmax_mu_accuracy']:13.4f} {auc:9.4f} {brier:11.4f}")
PY
  echo
  "$BIN" bench --records data/dcrouter.jsonl.gz --n 0 --threads 1 --terms 0,32,16
} > docs/results/estimator-terms.txt
cat docs/results/estimator-terms.txt
