# Shared by the benchmark scripts (sourced): start `llm-router serve` on the embedded default
# config (deploy/local/router.yaml) with its ports and paths rewritten, and wait until it serves.
# The caller provides $tmp (a scratch folder) and the array `pids` (its exit trap kills them):
# `scratch` makes both and that trap.
#
#   scratch
scratch() {
  tmp="$(mktemp -d)"
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
}

#
#   start_router NAME BINARY GRPC_PORT HTTP_PORT [SED_EXPR]
start_router() {
  sed -e "s#127.0.0.1:50051#127.0.0.1:$3#; s#127.0.0.1:8080#127.0.0.1:$4#" -e "${5:-s#^##}" \
    -e "s#catalog: ../catalogs/#catalog: $PWD/deploy/catalogs/#; s#records: ../../data/#records: $PWD/data/#" \
    deploy/local/router.yaml > "$tmp/$1.yaml"
  RUST_LOG=warn "$2" serve --config "$tmp/$1.yaml" > "$tmp/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do grep -q "llm-router serving" "$tmp/$1.log" && return 0; sleep 0.5; done
  echo "router $1 did not start" >&2
  cat "$tmp/$1.log" >&2
  exit 1
}
