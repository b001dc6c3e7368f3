#!/usr/bin/env bash
# Runs the fault tests (ctest label "faults": real processes, real signals, real files) and
# prints one line per fault: survived or NOT survived. Exit code: 0 only if all survived.
set -uo pipefail
build=${1:-build}
log=$(mktemp)
(cd "$build" && ctest -L faults -j "$(nproc)" --output-on-failure) >"$log" 2>&1
rc=$?
echo "Fault tests (tests/faults/faults_test.cpp):"
grep -E "Test +#[0-9]+: [A-Za-z]*FaultTest\." "$log" | sed -E 's/.*FaultTest\.([A-Za-z0-9_]+) .*(Passed|Failed|\*\*\*[A-Za-z]+).*/\1 \2/' |
  while read -r name status; do
    if [ "$status" = "Passed" ]; then echo "  survived      $name"; else echo "  NOT survived  $name"; fi
  done
echo "Fuzzing: no libFuzzer targets yet (see README, Reliability)."
if [ $rc -ne 0 ]; then
  echo "Some faults were not survived; the ctest log follows."
  cat "$log"
fi
rm -f "$log"
exit $rc
