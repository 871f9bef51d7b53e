#!/usr/bin/env bash
# Soak run (issue 7): `serve --no-cluster` under a steady load at half of its measured
# capacity for $SOAK_SECONDS (default 600), rotating through every captured Service,
# Endpoints and EndpointSlice review. Reports the rate, errors (non-2xx, socket errors,
# refused requests) and resident memory at the start and the end of the soak.
#
#   bench/soak.sh                 # 10 minutes
#   SOAK_SECONDS=60 bench/soak.sh # a quick look
#
# Needs wrk (apt-get install -y wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "soak.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 2; }
seconds=${SOAK_SECONDS:-600}
conns=${SOAK_CONNECTIONS:-32}
port=${SOAK_PORT:-18643}
metrics_port=$((port + 1))
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --profile dist --locked -q
bin=target/dist/extsvc-guard
"$bin" certs --out "$work/certs" >/dev/null
ls tests/fixtures/admission/*-CREATE.json tests/fixtures/admission/*-UPDATE.json >"$work/bodies"
RUST_LOG=warn "$bin" serve --no-cluster --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
  --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null && break; sleep 0.05; done
url="https://127.0.0.1:$port/validate"
rss() { awk '/VmRSS/{print $2}' "/proc/$server/status"; }
load() { # seconds delay_ms -> "req/s non2xx socket_errors p99"
  BODIES="$work/bodies" DELAY_MS=$2 wrk -t1 -c"$conns" -d"$1s" -s bench/soak.lua --latency "$url" |
    awk '/Requests\/sec/{r=$2} / 99%/{p=$2} /Non-2xx/{e=$NF} /Socket errors/{s=$4+$6+$8+$10} END{print r, (e==""?0:e), (s==""?0:s), p}'
}

idle=$(rss)
read -r capacity _ _ _ < <(load 10 0)
# Each connection waits delay ms between requests: $conns connections at half capacity.
delay=$(awk -v c="$capacity" -v n="$conns" 'BEGIN{d=n*1000/(c/2); printf "%d", (d<1?1:d)}')
read -r warm _ _ _ < <(load 10 "$delay")
start=$(rss)
read -r rate non2xx sockerr p99 < <(load "$seconds" "$delay")
end=$(rss)
refused=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^extsvc_guard_admission_refused_total/{s+=$2} END{print s+0}')
answered=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^extsvc_guard_admission_requests_total/{s+=$2} END{print s+0}')
growth=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%+.1f", (b-a)*100/a}')
cat <<REPORT
machine:        $(nproc) cores, $(uname -r)
capacity:       $capacity req/s ($conns connections, no pause)
soak:           ${seconds}s at $rate req/s ($(awk -v r="$rate" -v c="$capacity" 'BEGIN{printf "%.0f", r*100/c}')% of capacity; pause ${delay} ms per connection), p99 $p99
errors:         non-2xx $non2xx, socket errors $sockerr, refused by the server $refused
answered:       $answered reviews in all
resident (KiB): idle $idle, soak start $start (after a 10 s warm-up at the soak rate), soak end $end ($growth %)
REPORT
if [ "$non2xx" != 0 ] || [ "$sockerr" != 0 ] || [ "$refused" != 0 ]; then exit 1; fi
