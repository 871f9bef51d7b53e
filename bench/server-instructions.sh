#!/usr/bin/env bash
# Instructions per request of the whole server (TLS, HTTP, the handler), ours and the two
# reference servers of ../shared/bench, counted by callgrind (issue 6, item 1): what a
# request costs in user space, as a figure that does not move with the machine's load. The
# throughput runs vary by +-10 % between rounds; this does not, so it tells two builds of the
# server apart where wrk cannot. It does not count the kernel (sockets), which is about a
# third of each request's CPU (perf), nor cache misses.
#
# Each server runs under `valgrind --tool=callgrind` and answers 200 and then 2 200 requests
# posted one after another on one keep-alive HTTP/1.1 connection over TLS (a Python client,
# outside valgrind); the difference / 2 000 is the cost of one request (start-up, the TLS
# handshake and shutdown cancel out).
#
#   bench/server-instructions.sh
#
# Needs valgrind and python3; builds the dist profile and ../shared/bench/baseline-server
# (into $BASELINE_TARGET_DIR, as compare.sh does). Loopback only: 127.0.0.1:$BENCH_PORT
# (28543) and the next port for metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind python3; do
  command -v "$tool" >/dev/null || { echo "server-instructions.sh: $tool is missing" >&2; exit 2; }
done
port=${BENCH_PORT:-28543} metrics=$(( ${BENCH_PORT:-28543} + 1 ))
fixtures=$PWD/tests/fixtures/admission
baseline_dir=$PWD/../shared/bench/baseline-server
baseline_target=${BASELINE_TARGET_DIR:-${TMPDIR:-/tmp}/extsvc-bench-baseline}
cargo build --profile dist --locked -q
bin=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
(cd "$baseline_dir" && CARGO_TARGET_DIR=$baseline_target cargo build --release --locked -q)
baseline=$baseline_target/release/baseline-server
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" certs --out "$work/certs" >/dev/null

cat >"$work/post.py" <<'PY'
import http.client, ssl, sys, time
port, path, body, n, ca = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read(), int(sys.argv[4]), sys.argv[5]
context = ssl.create_default_context(cafile=ca)
for _ in range(600):  # the server starts slowly under valgrind
    try:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
        connection.connect()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"no server on 127.0.0.1:{port}")
for _ in range(n):
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"{path}: HTTP {response.status}")
PY

# count N PATH BODY SERVER-ARGS... -> instructions of the server's whole run
count() {
  local n=$1 path=$2 body=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$@" >/dev/null 2>"$work/valgrind.log" &
  server=$!
  python3 "$work/post.py" "$port" "$path" "$body" "$n" "$work/certs/ca.crt"
  # SIGTERM: ours drains and exits; the reference servers have no handler and just end.
  kill -TERM "$server"; wait "$server" || true
  awk '/^(summary|totals):/{print $2; exit}' "$work/cg.out"
}
per_request() {
  local few many
  few=$(count 200 "$@") many=$(count 2200 "$@")
  echo $(( (many - few) / 2000 ))
}
ours=("$bin" serve --no-cluster --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics"
      --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" --policy bench/policy.yaml)
reference=("$baseline" "127.0.0.1:$port" "$work/certs/tls.crt" "$work/certs/tls.key")
body002=$fixtures/002-Endpoints-CREATE.json body021=$fixtures/021-Service-CREATE-mutate.json

echo "| server, request | instructions/request |"
echo "|---|---:|"
echo "| reference noop, 002 | $(per_request /noop "$body002" "${reference[@]}") |"
echo "| reference allow (kube-rs DynamicObject), 002 | $(per_request /allow "$body002" "${reference[@]}") |"
echo "| extsvc-guard /validate 002 (--no-cluster: denied, no confirming read) | $(RUST_LOG=warn per_request /validate "$body002" "${ours[@]}") |"
echo "| reference noop, 021 | $(per_request /noop "$body021" "${reference[@]}") |"
echo "| reference allow (kube-rs DynamicObject), 021 | $(per_request /allow "$body021" "${reference[@]}") |"
echo "| extsvc-guard /mutate 021 (patched) | $(RUST_LOG=warn per_request /mutate "$body021" "${ours[@]}") |"
