#!/usr/bin/env bash
# The whole GPU-node visit in one command (at most ~8 minutes on the 16-core node): unpack the
# kit, configure and build ctrain against python3's PyTorch (CUDA, sm_90), run the CUDA tests
# (or the whole suite), run benchmarks/gpu_bench.py against its PyTorch peers, and write
# gpu_results.json (device, date, PyTorch version, every figure with its peers and ratios) and
# a log into the output folder.
#
#   scripts/node-check.sh [--out DIR] [--build-dir DIR] [--tests cuda|all|none] [--repeats N]
#                         [--compile] [--dry-run]
#
# On the node (through the device tool, with .gpukit/ carried; `scripts/node-kit.sh --serving`
# run here first adds ctrain-serve's headers to it, for the scoring row):
#   set -o pipefail; scripts/node-check.sh --out $OUT 2>&1 | tee $OUT/log
# --dry-run runs the same steps on a CPU machine with the CUDA parts skipped: the configure in a
# scratch folder (configure only), the tests and the benchmark's commands on the binaries of an
# existing --build-dir (default build-torch2), the benchmark at toy sizes on the CPU. The test
# suite runs it (NodeCheck.DryRunRunsEveryStep), so the script cannot rot between visits.
# Exit code: 0 when every step passed; the first failing step's code otherwise (each step says
# what it runs before it runs it). A failing ctest does not stop the benchmarks: the run goes
# on, and exits with ctest's code at the end.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="" build="" tests=cuda repeats=2 compile=() dry=0
usage() { echo "usage: scripts/node-check.sh [--out DIR] [--build-dir DIR] [--tests cuda|all|none] [--repeats N] [--compile] [--dry-run]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || usage; build=$2; shift 2 ;;
    --tests) [ $# -ge 2 ] || usage; tests=$2; shift 2 ;;
    --repeats) [ $# -ge 2 ] || usage; repeats=$2; shift 2 ;;
    --compile) compile=(--compile); shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "node-check: unknown argument $1" >&2; usage ;;
  esac
done
case "$tests" in cuda|all|none) ;; *) echo "node-check: --tests $tests: expected cuda, all or none" >&2; exit 2 ;; esac
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "node-check: --repeats $repeats: expected a positive integer" >&2; exit 2; }
out=${out:-$root/node-check-out}
mkdir -p "$out" || { echo "node-check: --out $out: cannot create" >&2; exit 1; }
out=$(cd "$out" && pwd)
start=$(date +%s)
step() { echo; echo "== node-check [$(( $(date +%s) - start )) s] $*"; }
fail() { echo "node-check: FAILED: $1 (exit $2)"; exit "$2"; }

step "environment"
if [ -d "$root/.gpukit/debs" ] || [ -d "$root/.nodekit/debs" ]; then
  # shellcheck source=node-build.sh
  source "$root/scripts/node-build.sh" || fail "unpacking the kit" $?
  set +e  # node-build.sh's `set -e` stays on after a source: a failing step must not end the visit
elif [ $dry -eq 0 ]; then
  fail "no .gpukit/ (run ../shared/gpu/make-kit.sh here and carry .gpukit to the node)" 1
else
  echo "no kit: the dry run uses this machine's packages"
fi
py=${CTRAIN_NODE_PYTHON:-${CTRAIN_TEST_PYTHON:-python3}}
"$py" -c 'import torch, torchvision' || fail "$py has no torch and torchvision (put the PyTorch installation first on PATH, or set CTRAIN_NODE_PYTHON)" 1
torch_dir=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
"$py" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())'
if [ $dry -eq 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi" $?
  "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || fail "PyTorch sees no GPU" 1
fi
nproc_=$(nproc)
configure=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_dir${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
           -DTORCH_CUDA_ARCH_LIST=9.0)
[ -n "${GTEST_SOURCE_DIR:-}" ] && configure+=(-DCTRAIN_GTEST_SOURCE_DIR="$GTEST_SOURCE_DIR")
[ -n "${EXTRA_INCLUDE_DIR:-}" ] && configure+=(-DCTRAIN_EXTRA_INCLUDE_DIRS="$EXTRA_INCLUDE_DIR")
[ -x /usr/local/cuda/bin/nvcc ] && configure+=(-DCUDAToolkit_ROOT=/usr/local/cuda -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)

if [ $dry -eq 1 ]; then
  build=${build:-$root/build-torch2}
  step "configure (dry run: configure only, in $out/configure-check)"
  cmake -S "$root" -B "$out/configure-check" -DCTRAIN_BUILD_TESTS=OFF -DCTRAIN_WITH_OPENCV=OFF "${configure[@]}" \
    >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; fail "configure" 1; }
  grep -A14 "ctrain configuration" "$out/configure.log"
  [ -x "$build/bin/ctrain-mnist" ] || fail "--build-dir $build has no bin/ctrain-mnist (build it first: make test-torch2)" 1
else
  build=${build:-$root/build-node}
  step "configure and build in $build ($nproc_ jobs)"
  cmake -S "$root" -B "$build" "${configure[@]}" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; fail "configure" 1; }
  grep -A14 "ctrain configuration" "$out/configure.log"
  grep -q "GPU image pipeline (--decode gpu): on" "$out/configure.log" ||
    echo "node-check: WARNING: the GPU image pipeline is off in this build (see the line above): its tests and benchmark rows will be missing"
  # The trainers first: without them there is no visit. Then the rest with -k 0: a part that
  # fails to build (the serving programs with a kit's extra headers, say) costs its own tests
  # and rows, not the node run.
  if ! cmake --build "$build" -j "$nproc_" --target ctrain-mnist ctrain-birds >"$out/build.log" 2>&1; then
    { grep -B2 -A10 "error" "$out/build.log" || tail -40 "$out/build.log"; } | head -80
    fail "build (the trainers, ctrain-mnist and ctrain-birds)" 1
  fi
  if ! cmake --build "$build" -j "$nproc_" -- -k 0 >>"$out/build.log" 2>&1; then
    { grep -B2 -A10 "error" "$out/build.log" || tail -40 "$out/build.log"; } | head -80
    echo "node-check: WARNING: part of the build failed (above, and $out/build.log); going on with what was built"
  fi
  echo "built: $(ls "$build/bin" | tr '\n' ' ')"
fi

if [ "$tests" != none ]; then
  # cuda: the tests that need a GPU and the ones that check the CUDA build (they skip without a
  # GPU, so the dry run runs them as skips); all: the whole suite.
  filter=(-R 'Cuda|CUDA|Gpu|GPU|Nccl|NCCL|CudaLink')
  [ "$tests" = all ] && filter=(-LE node)
  step "ctest ${filter[*]} in $build"
  (cd "$build" && CTRAIN_TEST_PYTHON="$py" ctest --output-on-failure -j "$nproc_" "${filter[@]}") 2>&1 | tail -60
  rc=${PIPESTATUS[0]}
  # The benchmarks still run: the visit is rare, and their figures stand apart from a failing test.
  [ "$rc" -eq 0 ] || { tests_failed=$rc; echo "node-check: ctest failed (exit $rc); the benchmarks run all the same"; }
fi

step "benchmarks/gpu_bench.py --repeats $repeats ${compile[*]}$([ $dry -eq 1 ] && echo ' --dry-run')"
data=${FASHION_MNIST_DIR:-${CTRAIN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}}
bench=(--bin "$build/bin" --data-folder "$data" --repeats "$repeats" --json "$out/gpu_results.json" "${compile[@]}")
[ $dry -eq 1 ] && bench+=(--dry-run)
"$py" "$root/benchmarks/gpu_bench.py" "${bench[@]}" 2>&1 | tee "$out/gpu_bench.log" | grep -v '^{"row"'
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || fail "gpu_bench.py" "$rc"
if [ $dry -eq 0 ]; then
  cp "$out/gpu_results.json" "$root/benchmarks/gpu_results.json"
  echo "wrote $out/gpu_results.json (and benchmarks/gpu_results.json: commit it with the RESULTS.md table)"
fi
[ "${tests_failed:-0}" -eq 0 ] || fail "ctest (above; the benchmark figures were written)" "$tests_failed"
step "done: every step passed"
