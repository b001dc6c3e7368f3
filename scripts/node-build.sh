#!/usr/bin/env bash
# On a machine with a PyTorch installation and no package manager (a GPU node), from the
# project root: unpacks the Debian packages of .nodekit/ (scripts/node-kit.sh made it; a
# .gpukit/ from ../shared/gpu/make-kit.sh works too) into a private prefix, configures ctrain
# against the LibTorch of `python3`'s torch, builds, and runs ctest.
#   scripts/node-build.sh [BUILD_DIR] [extra cmake args...]
# Also usable after `source`: it exports CMAKE_PREFIX_PATH, GTEST_SOURCE_DIR,
# EXTRA_INCLUDE_DIR, LD_LIBRARY_PATH and FASHION_MNIST_DIR for later commands.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kit=""
for k in "$root/.nodekit" "$root/.gpukit"; do [ -d "$k/debs" ] && { kit=$k; break; }; done
[ -n "$kit" ] || { echo "node-build: no .nodekit/ (run scripts/node-kit.sh on a Debian machine first)" >&2; exit 1; }
deps=${CTRAIN_NODE_DEPS:-/tmp/ctrain-deps}
mkdir -p "$deps"
for f in "$kit"/debs/*.deb; do dpkg -x "$f" "$deps" 2>/dev/null || (cd "$deps" && ar p "$f" data.tar.xz | tar xJ); done
python3 -c 'import torch' 2>/dev/null || { echo "node-build: python3 has no torch: put the PyTorch installation's python3 first on PATH" >&2; exit 1; }
# The torch package folder rather than torch.utils.cmake_prefix_path (its share/cmake): CMake
# then finds the wheel's libraries before any other LibTorch on the machine (Debian's 1.13 in
# /usr/lib, whose libc10 beside the wheel's aborts at start).
torch_prefix=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
export CMAKE_PREFIX_PATH="$torch_prefix:$deps/usr"  # the variable is :-separated on Unix
export GTEST_SOURCE_DIR=$deps/usr/src/googletest
export EXTRA_INCLUDE_DIR=$deps/usr/include
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# libssl-dev's headers (node-kit.sh --serving): its multiarch configuration header, and its
# libcrypto.so link pointed at the node's own libcrypto.so.3 (the same soname; the kit does not
# carry the library).
if [ -d "$deps/usr/include/x86_64-linux-gnu/openssl" ]; then
  export EXTRA_INCLUDE_DIR="$EXTRA_INCLUDE_DIR;$deps/usr/include/x86_64-linux-gnu"
  crypto=$deps/usr/lib/x86_64-linux-gnu/libcrypto.so
  if [ ! -e "$crypto" ]; then
    for sys in /usr/lib/x86_64-linux-gnu/libcrypto.so.3 /lib/x86_64-linux-gnu/libcrypto.so.3; do
      [ -e "$sys" ] && { ln -sf "$sys" "$crypto"; break; }
    done
  fi
fi
[ -d "$kit/data" ] && export FASHION_MNIST_DIR=$kit/data
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then return 0; fi  # sourced: the environment only
build=${1:-build-node}
shift || true
cmake -S "$root" -B "$root/$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCTRAIN_GTEST_SOURCE_DIR="$GTEST_SOURCE_DIR" -DCTRAIN_EXTRA_INCLUDE_DIRS="$EXTRA_INCLUDE_DIR" "$@"
cmake --build "$root/$build" -j "$(nproc)"
cd "$root/$build" && ctest --output-on-failure -j "$(nproc)"
