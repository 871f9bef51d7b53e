#!/usr/bin/env bash
# Does computing the violation gauges delay admission? `serve` watches a fake cluster of
# $SERVICES selectorless Services with hand-written Endpoints and EndpointSlices (3 objects
# each) in $NAMESPACES namespaces, one Service in $MISTAKES_EVERY with the seed's mistakes,
# pinned to one core as under the Deployment's 1-CPU limit (one worker thread; the gauges'
# thread shares the core); wrk, on the other core, posts 021-Service-CREATE-mutate to
# /mutate for $SECONDS_PER_RUN seconds from the moment /readyz answers 200, which is when
# the first (complete) computation starts. Runs alternate between --audit-interval 60s and
# 0 (no gauges), $ROUNDS of each. Per run: wrk's requests/s and p99, the server's own p50,
# p99 and max (the decision log's latency_us), and how long the computation took.
#
#   bench/audit-latency.sh
#   EXTSVC_GUARD=/path/to/build SERVICES=100000 bench/audit-latency.sh
#
# Needs wrk, taskset, curl and 2 cores. Loopback only; ports as bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk taskset curl; do
  command -v "$tool" >/dev/null || { echo "audit-latency.sh: $tool is missing" >&2; exit 2; }
done
services=${SERVICES:-100000} namespaces=${NAMESPACES:-1000} every=${MISTAKES_EVERY:-10}
seconds=${SECONDS_PER_RUN:-20} rounds=${ROUNDS:-2}
port=${BENCH_PORT:-28443} metrics=${BENCH_METRICS_PORT:-28080} fake_port=${BENCH_FAKE_PORT:-28444}
fixtures=$PWD/../shared/fixtures/admission
work=$(mktemp -d)
trap 'kill "${server:-}" "${fake:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -z "${EXTSVC_GUARD:-}" ]; then
  cargo build --profile dist --locked -q
  EXTSVC_GUARD=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
fi
fake_bin=$(cargo bench --locked --bench fake_cluster --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*fake_cluster[^"]*\)".*/\1/p' | tail -1)
[ -x "$fake_bin" ] || { echo "audit-latency.sh: could not build the fake_cluster bench" >&2; exit 1; }
"$fake_bin" --services "$services" --namespaces "$namespaces" --endpoints hand-written \
  --mistakes-every "$every" --port "$fake_port" --dir "$work" >"$work/fake.log" 2>&1 &
fake=$!
for _ in $(seq 600); do grep -q 'fake-cluster ready' "$work/fake.log" && break; sleep 0.5; done
grep -q 'fake-cluster ready' "$work/fake.log" || { cat "$work/fake.log" >&2; exit 1; }
"$EXTSVC_GUARD" certs --out "$work/certs" >/dev/null
echo "| gauges | req/s | wrk p99 | server p50 | server p99 | server max | computation |"
echo "|---|---:|---:|---:|---:|---:|---|"
for round in $(seq "$rounds"); do
  for interval in 60s 0; do
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$EXTSVC_GUARD" serve --kubeconfig "$work/kubeconfig" \
      --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
      --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" --policy bench/policy.yaml \
      --audit-interval "$interval" --log-format json >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1200); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.05; done
    out=$(BODY="$fixtures/021-Service-CREATE-mutate.json" taskset -c 1 wrk -t1 -c32 -d"${seconds}s" --latency \
      -s ../shared/bench/post.lua "https://127.0.0.1:$port/mutate")
    took=$(curl -sf "http://127.0.0.1:$metrics/metrics" | awk '/^extsvc_guard_violations_computation_seconds /{printf "%.1f s", $2}')
    kill -INT "$server"; wait "$server" 2>/dev/null || true
    rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    wrk99=$(awk '$1=="99%"{print $2}' <<<"$out")
    grep '"message":"decision"' "$work/serve.log" | grep -o '"latency_us":[0-9]*' | cut -d: -f2 | sort -n |
      awk -v i="$interval" -v r="$rate" -v w="$wrk99" -v t="${took:-none}" \
        '{a[NR]=$1} END{printf "| %s | %s | %s | %d µs | %d µs | %d µs | %s |\n", (i=="0"?"off":"every " i), r, w, a[int(NR*0.5)], a[int(NR*0.99)], a[NR], t}'
  done
done
