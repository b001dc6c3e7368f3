#!/usr/bin/env bash
# Runs the fault tests (ctest label "faults": real processes, real signals, real files) and
# prints one line per fault: survived or NOT survived. Then fuzzes every parser of untrusted
# bytes for FUZZ_SECONDS each (default 5; scripts/fuzz.sh) and prints executions and crashes
# per target. Exit code: 0 only if every fault was survived and no fuzz target crashed.
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
if [ $rc -ne 0 ]; then
  echo "Some faults were not survived; the ctest log follows."
  cat "$log"
fi
rm -f "$log"
echo "Fuzzing (fuzz/, libFuzzer + ASan/UBSan), ${FUZZ_SECONDS:-5} s per target:"
FUZZ_SECONDS=${FUZZ_SECONDS:-5} bash "$(dirname "$0")/fuzz.sh" | sed 's/^/  /'
fuzz_rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] && [ "$fuzz_rc" -eq 0 ]
