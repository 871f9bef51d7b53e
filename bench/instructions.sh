#!/usr/bin/env bash
# Instructions per answered review (issue 6, item 2), counted by callgrind: the engine's cost
# as a figure that does not move with the machine's load. For each case of `benches/cases`,
# the engine_instructions bench answers it 100 and then 1100 times under
# `valgrind --tool=callgrind`; the difference / 1000 is the cost of one review (parse + judge
# + encode, as the handlers call them; the setup cancels out).
#
#   bench/instructions.sh            # every case
#   bench/instructions.sh 001-Service-CREATE 021-Service-CREATE/mutate
#
# Needs valgrind (apt-get install -y valgrind). The counts are of the system allocator (the
# bench does not install jemalloc), so they compare builds, not allocators.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install -y valgrind)" >&2; exit 2; }
bin=$(cargo bench --locked --bench engine_instructions --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*engine_instructions[^"]*"' | cut -d'"' -f4 | tail -1)
[ -x "$bin" ] || { echo "instructions.sh: cannot build the engine_instructions bench" >&2; exit 2; }
if [ $# -eq 0 ]; then mapfile -t cases < <("$bin" --list); else cases=("$@"); fi
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
    awk '/Collected/{print $4}'
}
echo "| case | instructions/review |"
echo "|---|---:|"
for case in "${cases[@]}"; do
  few=$(count "$case" 100) many=$(count "$case" 1100)
  echo "| $case | $(( (many - few) / 1000 )) |"
done
