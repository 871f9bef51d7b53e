#!/usr/bin/env bash
# Every benchmark of issue 6 in one run, summary in $CARGO_TARGET_DIR/bench-run/summary.md:
#   1  throughput: ../shared/bench/compare.sh against `serve` watching a fake cluster of 10k
#      Services (controller Endpoints/EndpointSlices, 1k namespaces, plus the captured mysql-svc):
#      /validate with 002-Endpoints-CREATE (denied, confirmed by a live read) and /mutate with 021
#   2  engine: `cargo bench --bench engine` (criterion medians) and `--bench engine_allocs`
#   3  bench/check.sh, when it exists
#   4  memory: resident size of `serve` at ready and after load with no cluster, with 100k
#      Services (controller endpoints), and with 100k selectorless Services + 100k hand-written
#      Endpoints + 100k EndpointSlices; start→ready time
#
#   bench/run.sh            # everything (about 15 minutes on 2 cores, after the build)
#   BENCH_ONLY="2 4" bench/run.sh
#
# Environment: BENCH_PORT (28443, admission), BENCH_METRICS_PORT (28080), BENCH_FAKE_PORT
# (28444), BASELINE_PORT (28445, compare.sh's reference server), BENCH_SECONDS (6, per
# compare.sh run), BENCH_ROUNDS (3), BENCH_OBJECTS (100000, memory runs), EXTSVC_GUARD (a
# binary to measure instead of building the dist profile).
# Needs wrk (apt-get install -y wrk) and curl; installs nothing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
out=$CARGO_TARGET_DIR/bench-run
only=${BENCH_ONLY:-1 2 3 4}
port=${BENCH_PORT:-28443} metrics=${BENCH_METRICS_PORT:-28080} fake_port=${BENCH_FAKE_PORT:-28444}
export BASELINE_PORT=${BASELINE_PORT:-28445}
secs=${BENCH_SECONDS:-6} rounds=${BENCH_ROUNDS:-3} objects=${BENCH_OBJECTS:-100000}
fixtures=$root/tests/fixtures/admission
compare=$root/../shared/bench/compare.sh

wants() { [[ " $only " == *" $1 "* ]]; }
say() { echo "== $*" >&2; }
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (apt-get install -y $tool)" >&2; exit 2; }
done
[ -d "$fixtures" ] || { echo "run.sh: no fixtures at $fixtures" >&2; exit 2; }
for p in "$port" "$metrics" "$fake_port" "$BASELINE_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "run.sh: port $p is in use; set BENCH_PORT/BENCH_METRICS_PORT/BENCH_FAKE_PORT/BASELINE_PORT" >&2; exit 2
  fi
done

rm -rf "$out"; mkdir -p "$out"
summary=$out/summary.md
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ -n "${EXTSVC_GUARD:-}" ]; then
  bin=$EXTSVC_GUARD   # another build to measure (say, an older commit's), same references
else
  say "building (the dist profile: the shipped build)"
  cargo build --profile dist --locked -q
  bin=$CARGO_TARGET_DIR/dist/extsvc-guard
fi
fake_bin=$(cargo bench --locked --bench fake_cluster --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*fake_cluster[^"]*\)".*/\1/p' | tail -1)
[ -x "$fake_bin" ] || { echo "run.sh: could not build the fake_cluster bench" >&2; exit 1; }
"$bin" certs --out "$out/certs" >/dev/null

{
  echo "# bench/run.sh — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
} >"$summary"

fake_pid=
# start_fake SERVICES NAMESPACES MODE [--extra FILE]...: waits until it serves.
start_fake() {
  local n=$1 m=$2 mode=$3; shift 3
  "$fake_bin" --services "$n" --namespaces "$m" --endpoints "$mode" --port "$fake_port" \
    --dir "$out/fake" "$@" >"$out/fake.out" 2>"$out/fake.err" &
  fake_pid=$!; pids+=("$fake_pid")
  local deadline=$((SECONDS + 900))
  while [ "$SECONDS" -lt "$deadline" ]; do
    grep -q "fake-cluster ready" "$out/fake.out" 2>/dev/null && return 0
    kill -0 "$fake_pid" 2>/dev/null || { cat "$out/fake.err" >&2; exit 1; }
    sleep 0.25
  done
  echo "run.sh: the fake cluster did not start" >&2; exit 1
}
# SIGINT: serve skips its shutdown delay. A background job of a script ignores SIGINT unless it
# handles it (serve does, fake_cluster does not), so SIGTERM follows.
stop() { [ -n "${1:-}" ] && { kill -INT "$1" 2>/dev/null || true; sleep 0.5; kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }; }

serve_pid= ready_ms=
# start_serve ARGS...: starts serve and waits for /readyz; sets serve_pid and ready_ms.
start_serve() {
  local t0 t1
  t0=$(date +%s%N)
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
    --tls-cert "$out/certs/tls.crt" --tls-key "$out/certs/tls.key" --policy bench/policy.yaml \
    "$@" >>"$out/serve.log" 2>&1 &
  serve_pid=$!; pids+=("$serve_pid")
  local deadline=$((SECONDS + 900))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if curl -sf -o /dev/null "http://127.0.0.1:$metrics/readyz"; then
      t1=$(date +%s%N); ready_ms=$(( (t1 - t0) / 1000000 )); return 0
    fi
    kill -0 "$serve_pid" 2>/dev/null || { tail -5 "$out/serve.log" >&2; exit 1; }
    sleep 0.001
  done
  echo "run.sh: serve did not become ready" >&2; exit 1
}
rss_mib() { awk -v k="${2:-VmRSS}" '$1==k":"{printf "%.1f", $2/1024}' "/proc/$1/status"; }
load() { # URL BODY SECONDS -> req/s
  BODY=$2 wrk -t1 -c32 -d"${3}s" -s "$root/../shared/bench/post.lua" "$1" | awk '/Requests\/sec/{print $2}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

if wants 1; then
  say "1: throughput against a fake cluster of 10k Services"
  start_fake 10000 1000 controller --extra 001-Service-CREATE.json
  start_serve --kubeconfig "$out/fake/kubeconfig"
  {
    echo "## 1. Throughput (compare.sh, wrk -t1 -c32, ${secs}s × $rounds rounds)"
    echo
    echo "serve watching a fake API server (TLS, loopback) with 10 000 selector Services, their controller Endpoints and EndpointSlices in 1 000 namespaces, and default/mysql-svc (fixture 001). The 002 review (mysql-ep) is denied as orphaned (did you mean mysql-svc?), and every denial is confirmed by a live read of the namespace."
    echo
    for target in "validate 002-Endpoints-CREATE.json" "mutate 021-Service-CREATE-mutate.json"; do
      read -r path body <<<"$target"
      echo "### /$path with $body"
      echo
      echo '```'
      "$compare" "https://127.0.0.1:$port/$path" "$fixtures/$body" 32 "$secs" "$rounds" 2>&1
      echo '```'
      echo
    done
    echo "serve resident after the load: $(rss_mib "$serve_pid") MiB (peak $(rss_mib "$serve_pid" VmHWM) MiB)"
    echo
  } | tee -a "$summary"
  stop "$serve_pid"; stop "$fake_pid"
fi

if wants 2; then
  say "2: engine benches"
  cargo bench --locked --bench engine >"$out/engine.txt" 2>&1
  cargo bench --locked --bench engine_allocs >"$out/engine_allocs.txt" 2>"$out/engine_allocs.err"
  {
    echo "## 2. Engine: parse + judge + encode of one review (criterion median, 95% interval)"
    echo
    echo "| case | verdict | median | interval |"
    echo "|---|---|---:|---|"
    awk '/^[^ ].*: [a-z]+ \([0-9]+ bytes in/{split($0, a, ": "); v[a[1]]=a[2]; sub(/ .*/, "", v[a[1]])}
         /^review\//{name=$1; sub(/^review\//, "", name); fresh=1}
         /time:/ && fresh {gsub(/[][]/, ""); fresh=0; print "| " name " | " v[name] " | " $4 " " $5 " | " $2 " " $3 " – " $6 " " $7 " |"}' \
      "$out/engine.txt"
    echo
    echo "Allocations (stats_alloc, mean of 1000 reviews):"
    echo
    cat "$out/engine_allocs.txt"
    echo
  } | tee -a "$summary"
fi

if wants 3; then
  if [ -x bench/check.sh ]; then
    say "3: bench/check.sh"
    { echo "## 3. check"; echo; echo '```'; bench/check.sh 2>&1; echo '```'; echo; } | tee -a "$summary"
  else
    echo -e "## 3. check\n\nbench/check.sh is not there yet: skipped.\n" | tee -a "$summary"
  fi
fi

if wants 4; then
  say "4: memory and start→ready"
  body=$fixtures/002-Endpoints-CREATE.json
  url=https://127.0.0.1:$port/validate
  times=()
  for _ in 1 2 3 4 5; do
    start_serve --no-cluster; times+=("$ready_ms")
    idle=$(rss_mib "$serve_pid"); stop "$serve_pid"
  done
  start_serve --no-cluster
  ready_rss=$(rss_mib "$serve_pid")
  rate=$(load "$url" "$body" 10)
  {
    echo "## 4. Memory and start→ready"
    echo
    echo "| serve | start→ready | resident at ready | after 10 s of load (/validate 002, wrk -c32) | peak | req/s |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| --no-cluster | $(median "${times[@]}") ms (median of 5: ${times[*]}) | $ready_rss MiB | $(rss_mib "$serve_pid") MiB | $(rss_mib "$serve_pid" VmHWM) MiB | $rate |"
  } | tee -a "$summary"
  stop "$serve_pid"
  for mode in controller hand-written; do
    start_fake "$objects" 1000 "$mode"
    start_serve --kubeconfig "$out/fake/kubeconfig"
    ready_rss=$(rss_mib "$serve_pid")
    rate=$(load "$url" "$body" 10)
    case $mode in
      controller) what="$objects selector Services + their controller Endpoints and EndpointSlices (not kept)";;
      *) what="$objects selectorless Services + $objects hand-written Endpoints + $objects EndpointSlices (all kept)";;
    esac
    echo "| $what | $ready_ms ms | $ready_rss MiB | $(rss_mib "$serve_pid") MiB | $(rss_mib "$serve_pid" VmHWM) MiB | $rate |" | tee -a "$summary"
    stop "$serve_pid"; stop "$fake_pid"
  done
  echo | tee -a "$summary"
fi
say "summary: $summary"
