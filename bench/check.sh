#!/usr/bin/env bash
# Times `extsvc-guard check` on generated manifest sets of 5k, 50k and 500k objects (issue 6).
#
# Usage: bench/check.sh [SIZE:RUNS ...]        (default: 5000:5 50000:5 500000:3)
#
# Builds the shipped binary (`cargo build --profile dist --locked`), writes each set with
# bench/gen-manifests.py into a temporary directory, runs
#   target/dist/extsvc-guard check DIR --format json >/dev/null
# RUNS times (exit 1 is expected: the sets hold mistakes on purpose) and prints a markdown
# table: median wall time, user+sys CPU and max RSS of the runs, objects per second, and the
# cost ratio of each size to the one before it (10x the objects should cost about 10x).
# Uses /usr/bin/time -v when present, bash's TIMEFORMAT otherwise (then without RSS).
# Set EXTSVC_GUARD=path to time another binary (e.g. a build of main) without building.
set -euo pipefail

cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(5000:5 50000:5 500000:3)

if [ -z "${EXTSVC_GUARD:-}" ]; then
    cargo build --profile dist --locked >&2
    target_dir="${CARGO_TARGET_DIR:-target}"
    EXTSVC_GUARD="$target_dir/dist/extsvc-guard"
fi
bin="$EXTSVC_GUARD"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

gnu_time=""
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
    gnu_time=/usr/bin/time
fi

# One run: prints "wall_seconds cpu_seconds max_rss_kib" (rss "-" when unknown).
time_once() {
    local dir="$1" code
    if [ -n "$gnu_time" ]; then
        set +e
        "$gnu_time" -v -o "$work/time.txt" "$bin" check "$dir" --format json >/dev/null 2>"$work/stderr"
        code=$?
        set -e
        check_code "$code"
        awk -F': ' '
            /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
            /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
            END { printf "%.3f %.3f %s\n", w, u + s, r }' "$work/time.txt"
    else
        local TIMEFORMAT="%R %U %S"
        set +e
        { time "$bin" check "$dir" --format json >/dev/null 2>"$work/stderr"; } 2>"$work/time.txt"
        code=$?
        set -e
        check_code "$code"
        awk '{ printf "%.3f %.3f -\n", $1, $2 + $3 }' "$work/time.txt"
    fi
}

check_code() {
    if [ "$1" -ne 1 ]; then
        echo "extsvc-guard check exited $1, expected 1 (denials):" >&2
        cat "$work/stderr" >&2
        exit 2
    fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "binary: $bin ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| objects | runs | median wall (s) | median CPU user+sys (s) | max RSS (MiB) | objects/s | cost vs previous size |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
prev_n="" prev_wall=""
for spec in "${sizes[@]}"; do
    n="${spec%%:*}" runs="${spec##*:}"
    [ "$runs" != "$spec" ] || runs=5
    dir="$work/set-$n"
    python3 bench/gen-manifests.py "$n" "$dir" 2>/dev/null
    : >"$work/runs.txt"
    for _ in $(seq "$runs"); do
        time_once "$dir" >>"$work/runs.txt"
    done
    wall=$(awk '{ print $1 }' "$work/runs.txt" | median)
    cpu=$(awk '{ print $2 }' "$work/runs.txt" | median)
    rss=$(awk '$3 != "-" { print $3 }' "$work/runs.txt" | sort -g | tail -1)
    rss_mib=$([ -n "$rss" ] && awk -v r="$rss" 'BEGIN { printf "%.0f", r / 1024 }' || echo "-")
    rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf (w > 0) ? "%.0f" : "-", n / w }')
    ratio="-"
    if [ -n "$prev_wall" ]; then
        ratio=$(awk -v n="$n" -v pn="$prev_n" -v w="$wall" -v pw="$prev_wall" \
            'BEGIN { printf "%.1fx time for %.0fx objects", w / pw, n / pn }')
    fi
    echo "| $n | $runs | $wall | $cpu | $rss_mib | $rate | $ratio |"
    prev_n="$n" prev_wall="$wall"
    rm -rf "$dir"
done
