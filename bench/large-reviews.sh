#!/usr/bin/env bash
# Memory under the largest reviews: `serve --no-cluster`, then $ROUNDS (default 5) rounds of
# $AT_ONCE (default 16) concurrent /validate posts of an Endpoints CREATE near the 3 MiB body
# limit (~140k addresses, built from the captured 002-Endpoints-CREATE review), and the
# server's resident memory (VmRSS) and peak (VmHWM) after; answers by HTTP status.
#
#   bench/large-reviews.sh
#
# Needs curl and python3 (its client blocks while the server reads; curl spins on a full
# socket and takes most of the CPU). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5} at_once=${AT_ONCE:-16}
port=${BENCH_PORT:-28443} metrics=${BENCH_METRICS_PORT:-28080}
fixtures=$PWD/tests/fixtures/admission
work=$(mktemp -d)
trap 'kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cargo build --profile dist --locked -q
bin=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
"$bin" certs --out "$work/certs" >/dev/null
python3 - "$fixtures/002-Endpoints-CREATE.json" "$work/large.json" <<'PY'
import json, sys
review = json.load(open(sys.argv[1]))
subset = review["request"]["object"]["subsets"][0]
# 10.x.y.z addresses, as many as fit under the limit with the rest of the review.
subset["addresses"] = [
    {"ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}
    for i in range(1, 140_001)
]
body = json.dumps(review, separators=(",", ":"))
open(sys.argv[2], "w").write(body)
print(f"body: {len(body) / 1048576:.2f} MiB, {len(subset['addresses'])} addresses")
PY
"$bin" serve --no-cluster --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
  --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" >"$work/log" 2>&1 &
server=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.02; done
mib() { awk -v k="$1:" '$1==k{printf "%.1f", $2/1024}' "/proc/$server/status"; }
echo "ready: $(mib VmRSS) MiB resident"
python3 - "$port" "$work/large.json" "$rounds" "$at_once" <<'PY'
import collections, http.client, ssl, sys, threading, time
port, path, rounds, at_once = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = open(path, "rb").read()
context = ssl._create_unverified_context()
answers, seconds = collections.Counter(), []
def post():
    started = time.monotonic()
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        c.request("POST", "/validate", body, {"Content-Type": "application/json"})
        answers[c.getresponse().status] += 1
    except OSError as e:
        answers[type(e).__name__] += 1
    seconds.append(time.monotonic() - started)
started = time.monotonic()
for _ in range(rounds):
    threads = [threading.Thread(target=post) for _ in range(at_once)]
    for t in threads: t.start()
    for t in threads: t.join()
seconds.sort()
print(f"{rounds * at_once} reviews, {at_once} at once, in {time.monotonic() - started:.1f} s; "
      f"answers: {dict(answers)}; seconds per review: median {seconds[len(seconds) // 2]:.2f}, max {seconds[-1]:.2f}")
PY
echo "after: $(mib VmRSS) MiB resident, peak $(mib VmHWM) MiB"
