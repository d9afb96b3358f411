#!/usr/bin/env bash
# Retrieval's document-frequency cut (estimator.max_df_frac; default 0.5) as a speed knob (issue 16):
# features in more than the cut's share of the training prompts are skipped. For each vendored data
# set: argmax-μ accuracy, mean AUC and mean Brier (estimator eval, 70/30 split, kNN without head) at
# the default and at cuts of 25 / 50 / 100 / 200 training prompts; then predictions/s per thread
# and per-stage µs on dcrouter (estimator bench, all query terms) at the same cuts.
# Writes docs/results/estimator-max-df.txt (~3 min; not in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release --bin estimator -q
BIN="$CARGO_TARGET_DIR/release/estimator"
{
  echo "# kNN retrieval with a document-frequency cut (estimator eval --head none --max-df F, 70/30 split)"
  printf '%-28s %7s %6s %8s %13s %9s %11s\n' data records docs max-df "argmax-μ acc" "mean AUC" "mean Brier"
  for ds in dcrouter routellm pricing-reversal-simpleqa pricing-reversal-reasoning; do
    n=$(python3 -c "import gzip; print(sum(1 for _ in gzip.open('data/$ds.jsonl.gz')))")
    for D in default 25 50 100 200; do
      if [ "$D" = default ]; then df=0.5; else df=$(python3 -c "print(round(min(1.0, $D / ($n * 0.7)), 5))"); fi
      "$BIN" eval --records "data/$ds.jsonl.gz" --head none --max-df "$df" --json 2>/dev/null | python3 -c "
import json, sys
r = json.load(sys.stdin); ms = r['models']
auc = sum(m['auc'] or 0 for m in ms) / len(ms); brier = sum(m['brier'] for m in ms) / len(ms)
print(f\"{'$ds':<28} {$n:>7} {'$D':>6} {$df:>8} {r['argmax_mu_accuracy']:13.4f} {auc:9.4f} {brier:11.4f}\")"
    done
  done
  echo
  n=$(python3 -c "import gzip; print(sum(1 for _ in gzip.open('data/dcrouter.jsonl.gz')))")
  cuts=$(python3 -c "print(','.join(['0.5'] + [str(round(D / ($n * 0.7), 5)) for D in (25, 50, 100, 200)]))")
  "$BIN" bench --records data/dcrouter.jsonl.gz --n 0 --threads 1 --terms 0 --max-df "$cuts"
} > docs/results/estimator-max-df.txt
cat docs/results/estimator-max-df.txt
