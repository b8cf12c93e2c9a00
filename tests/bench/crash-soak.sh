#!/usr/bin/env bash
# The crash suite's long run: every write and flush point of every path
# (CRASH_POINTS=0), in all three modes, once per seed; the power cut mode
# drops a different subset of the unflushed writes with each seed.
#   tests/bench/crash-soak.sh [SEEDS]     (default 5; build-crash or build
#   configured with -Dfault_injection=true)
# Prints the suite's table per seed and the totals.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
BUILD=${BUILD:-build}
[[ -x $BUILD/tests/vdisk-fault ]] || BUILD=build-crash
export VDISK_FAULT_BIN=$PWD/$BUILD/tests/vdisk-fault CRASH_WRITER=$PWD/$BUILD/tests/crash-writer
[[ -x $VDISK_FAULT_BIN ]] || { echo "no $VDISK_FAULT_BIN: configure with -Dfault_injection=true"; exit 1; }
seeds=${1:-5}
tried=0 failures=0 rc=0
for ((seed = 1; seed <= seeds; seed++)); do
  echo "== seed $seed"
  out=$(CRASH_POINTS=0 CRASH_SEED=$((seed * 7919)) /usr/bin/python3 tests/crash/run.py) || rc=1
  echo "$out" | grep -v '^  '
  line=$(echo "$out" | grep 'crash points tried')
  tried=$((tried + $(echo "$line" | awk '{print $3}')))
  failures=$((failures + $(echo "$line" | awk '{print $7}')))
done
echo "soak: $seeds seeds, $tried crash points tried, $failures failures"
exit $rc
