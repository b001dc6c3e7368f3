#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for
# FUZZ_SECONDS (default 30), starting from the committed seeds in fuzz/corpus/<name>/ (copied,
# so new inputs never land in the repository). Prints one line per target: executions and
# crashes. Exit code: 0 only if no target crashed. Crash inputs are kept in build-fuzz/crashes/
# (an earlier run's in build-fuzz/crashes.previous/).
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
# The project's libraries, instrumented, and the targets of fuzz/ linked against them.
# (A build-fuzz/ of the former stand-alone fuzz project is configured from another source folder.)
# Without unity batches here, and every library (not only those the fuzzers link): each
# library source compiles on its own, so CI notices one that builds only beside its batch
# neighbours in the other lanes (a missing #include, a helper it borrows).
[ -f build-fuzz/CMakeCache.txt ] && ! grep -q "^CTRAIN_FUZZ:BOOL=ON" build-fuzz/CMakeCache.txt && rm -rf build-fuzz
conf=$(mktemp)
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTRAIN_FUZZ=ON \
  -DCTRAIN_UNITY_BUILD=OFF -DCTRAIN_WITH_OPENCV=ON -DCTRAIN_WITH_SERVE=ON >"$conf" 2>&1 || { cat "$conf"; exit 1; }
mv "$conf" build-fuzz/configure.log
cmake --build build-fuzz -j "$(nproc)" >build-fuzz/build.log 2>&1 || { cat build-fuzz/build.log; exit 1; }
# LibTorch is not instrumented: its globals and allocations are not ours to judge.
export ASAN_OPTIONS=detect_odr_violation=0:alloc_dealloc_mismatch=0:detect_leaks=0
export UBSAN_OPTIONS=print_stacktrace=1
# OpenCV's own cap on a decoded frame (read when the library loads; 2^30 pixels by default), at
# fuzz_decode's --max-image-pixels: TIFF and WebP are judged only after decoding, and a 3 GB
# frame is no finding of ours.
export OPENCV_IO_MAX_IMAGE_PIXELS=$((1 << 22))
# A crash is counted in the run that found it: an earlier run's inputs move to crashes.previous/.
if [ -n "$(ls -A build-fuzz/crashes 2>/dev/null)" ]; then
  rm -rf build-fuzz/crashes.previous && mv build-fuzz/crashes build-fuzz/crashes.previous
fi
mkdir -p build-fuzz/crashes
total_crashes=0
for name in tf_config jpeg_header gpu_plan decode idx safetensors checkpoint http_request npy json_body; do
  work=build-fuzz/corpus/$name
  mkdir -p "$work"
  cp -n fuzz/corpus/$name/* "$work"/ 2>/dev/null
  log=build-fuzz/$name.log
  build-fuzz/bin/fuzz_$name "$work" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 \
    -artifact_prefix=build-fuzz/crashes/$name- >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 "stat::number_of_executed_units" "$log" | awk '{print $2}')
  crashes=$(ls build-fuzz/crashes/ 2>/dev/null | grep -c "^$name-" )
  [ $rc -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1
  total_crashes=$((total_crashes + crashes))
  echo "fuzz $name: ${execs:-0} executions in ${secs}s, $crashes crashes"
  [ "$crashes" -ne 0 ] && tail -30 "$log"
done
echo "fuzz total: $total_crashes crashes"
exit $((total_crashes > 0))
