#!/usr/bin/env bash
# The retrieval cuts of the hashed kNN on every vendored data set: the query-side cut (score on the
# query's N heaviest features, estimator.max_query_terms) and the index-side cut (index each
# training prompt under its N heaviest features, estimator.max_doc_terms), alone and together.
# argmax-μ accuracy, mean AUC and mean Brier over the models (estimator eval, 70/30 split, kNN
# without head), then predictions/s per thread and per-stage times (estimator bench) on dcrouter.
# Writes docs/results/estimator-terms.txt (~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin estimator -q
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# A copy: a rebuild during the run does not change the binary under it.
BIN="$tmp/estimator"
cp "$CARGO_TARGET_DIR/release/estimator" "$BIN"
CUTS="0:0 32:0 16:0 0:48 0:32 0:24 32:48 32:24"
for ds in dcrouter routellm pricing-reversal-simpleqa pricing-reversal-reasoning; do
  for c in $CUTS; do
    q="${c%:*}" d="${c#*:}"
    "$BIN" eval --records "data/$ds.jsonl.gz" --head none --max-query-terms "$q" --max-doc-terms "$d" --json \
      > "$tmp/$ds-$q-$d.json"
  done
done
{
  python3 - "$tmp" "$CUTS" <<'PY'
import json, sys
tmp, cuts = sys.argv[1], [c.split(":") for c in sys.argv[2].split()]
print("# kNN retrieval cuts (estimator eval, 70/30 split, no head)")
print("# query: the query's N heaviest features scored (all = 0); index: each training prompt indexed under its N heaviest")
print(f"{'data':<28} {'query':>5} {'index':>5} {'argmax-μ acc':>13} {'mean AUC':>9} {'mean Brier':>11}")
for ds in ("dcrouter", "routellm", "pricing-reversal-simpleqa", "pricing-reversal-reasoning"):
    for q, d in cuts:
        r = json.load(open(f"{tmp}/{ds}-{q}-{d}.json"))
        ms = r["models"]
        auc = sum(m["auc"] or 0 for m in ms) / len(ms)
        brier = sum(m["brier"] for m in ms) / len(ms)
        lab = lambda n: "all" if n == "0" else n
        print(f"{ds:<28} {lab(q):>5} {lab(d):>5} {r['argmax_mu_accuracy']:13.4f} {auc:9.4f} {brier:11.4f}")
PY
  echo
  "$BIN" bench --records data/dcrouter.jsonl.gz --n 0 --threads 1 --terms 0,32,16 --doc-terms 0,48,32,24
} > docs/results/estimator-terms.txt
cat docs/results/estimator-terms.txt
