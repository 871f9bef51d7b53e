#!/usr/bin/env bash
# The server's own time per request (issue 6, item 5): `serve --no-cluster` under wrk -c32 for
# $SECONDS_PER_CASE (default 10) per case, then the p50/p99/max of the decision log's
# `latency_us` (time from the request's arrival to its encoded answer, as also observed by
# extsvc_guard_admission_duration_seconds).
#
#   bench/server-time.sh
#   EXTSVC_GUARD=/path/to/another/build bench/server-time.sh     # time that binary, no build
#
# Needs wrk (apt-get install -y wrk) and curl. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "server-time.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 2; }
seconds=${SECONDS_PER_CASE:-10}
port=${BENCH_PORT:-28443} metrics=${BENCH_METRICS_PORT:-28080}
fixtures=$PWD/tests/fixtures/admission
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -z "${EXTSVC_GUARD:-}" ]; then
  cargo build --profile dist --locked -q
  EXTSVC_GUARD=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
fi
bin=$EXTSVC_GUARD
"$bin" certs --out "$work/certs" >/dev/null
echo "| case | req/s (wrk -c32) | server time p50 | p99 | max |"
echo "|---|---:|---:|---:|---:|"
for case in "validate 002-Endpoints-CREATE.json" "mutate 021-Service-CREATE-mutate.json" "validate 001-Service-CREATE.json" "validate 013-EndpointSlice-CREATE.json"; do
  read -r path body <<<"$case"
  "$bin" serve --no-cluster --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
    --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" --policy bench/policy.yaml \
    --log-format json >"$work/log" 2>&1 &
  server=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.02; done
  rate=$(BODY="$fixtures/$body" wrk -t1 -c32 -d"${seconds}s" -s ../shared/bench/post.lua "https://127.0.0.1:$port/$path" | awk '/Requests\/sec/{print $2}')
  kill -INT "$server"; wait "$server" 2>/dev/null || true
  grep -o '"latency_us":[0-9]*' "$work/log" | cut -d: -f2 | sort -n |
    awk -v c="/$path $body" -v r="$rate" '{a[NR]=$1} END{printf "| %s | %s | %d µs | %d µs | %d µs |\n", c, r, a[int(NR*0.5)], a[int(NR*0.99)], a[NR]}'
done
