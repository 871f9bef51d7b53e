#!/usr/bin/env bash
# Peak resident memory of `extsvc-guard scan` against a fake cluster (issue 24, item 4):
# $SERVICES selectorless Services with hand-written Endpoints and EndpointSlices (3 objects
# each, shaped like a real API server's: managedFields, last-applied configuration) in
# $NAMESPACES namespaces, one Service in $MISTAKES_EVERY with the seed's mistakes (0: none).
# Each build in $BUILDS (default: the dist build) runs `scan --format policyreport`
# (everything the reports hold, as --apply writes them; the fake serves no PolicyReports)
# and `scan --format summary`: wall time, CPU and max RSS (GNU time), and whether both
# builds printed the same results.
#
#   bench/scan-memory.sh                                       # 100k Services: 300k objects in namespaces of 10k
#   NAMESPACES=1 SERVICES=33334 bench/scan-memory.sh           # one namespace of 100k objects
#   BUILDS="/tmp/old/extsvc-guard target/dist/extsvc-guard" bench/scan-memory.sh
#
# Loopback only; the fake cluster takes about 6 GiB for 300k objects.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "scan-memory.sh: GNU time (/usr/bin/time) is missing" >&2; exit 2; }
services=${SERVICES:-100000} namespaces=${NAMESPACES:-30} every=${MISTAKES_EVERY:-0}
fake_port=${BENCH_FAKE_PORT:-28444}
work=$(mktemp -d)
trap 'kill "${fake:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -z "${BUILDS:-}" ]; then
  cargo build --profile dist --locked -q
  BUILDS=${CARGO_TARGET_DIR:-target}/dist/extsvc-guard
fi
fake_bin=$(cargo bench --locked --bench fake_cluster --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*fake_cluster[^"]*\)".*/\1/p' | tail -1)
[ -x "$fake_bin" ] || { echo "scan-memory.sh: could not build the fake_cluster bench" >&2; exit 1; }
"$fake_bin" --services "$services" --namespaces "$namespaces" --endpoints hand-written \
  --mistakes-every "$every" --port "$fake_port" --dir "$work" >"$work/fake.log" 2>&1 &
fake=$!
for _ in $(seq 600); do grep -q 'fake-cluster ready' "$work/fake.log" && break; sleep 0.5; done
grep -q 'fake-cluster ready' "$work/fake.log" || { cat "$work/fake.log" >&2; exit 1; }
head -1 "$work/fake.log"
echo "| build | format | exit | wall | CPU | max RSS |"
echo "|---|---|---:|---:|---:|---:|"
n=0
for bin in $BUILDS; do
  n=$((n + 1))
  for format in policyreport summary; do
    if [ "$format" = summary ] && ! "$bin" scan --help | grep -q "possible values:.*summary"; then continue; fi
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin" scan --kubeconfig "$work/kubeconfig" \
      --format "$format" >"$work/out-$n-$format" 2>"$work/err" && code=0 || code=$?
    read -r wall user sys rss <"$work/time"
    printf '| %s | %s | %s | %s s | %.1f s | %.1f MiB |\n' "$bin" "$format" "$code" "$wall" \
      "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)"
  done
done
# The results, namespace by namespace, whatever the reports are split into.
if [ "$n" -gt 1 ]; then
  python3 - "$work"/out-*-policyreport <<'PY'
import json, sys
from collections import defaultdict
def results(path):
    m = defaultdict(list)
    for r in json.load(open(path))["items"]:
        for x in r["results"]:
            x.pop("timestamp", None)
            m[r["metadata"]["namespace"]].append(json.dumps(x, sort_keys=True))
    return {k: sorted(v) for k, v in m.items()}
first = results(sys.argv[1])
print("same results:", all(results(p) == first for p in sys.argv[2:]))
PY
fi
