#!/usr/bin/env bash
# Run on a Debian machine with network to Debian's archive, in the project checkout: fills
# .nodekit/ (git-ignored) with what a GPU node that has a PyTorch installation but no package
# manager lacks for building ctrain: Debian's header-only CLI11 and nlohmann-json, the
# googletest source, gloo headers (PyTorch wheels ship none), libonnx + libprotobuf (ONNX
# export), protoc (TensorBoard event messages), and Fashion-MNIST. Copy .nodekit/ along with the checkout, then run
# scripts/node-build.sh there.
#
#   scripts/node-kit.sh --serving [KIT]   adds to an existing kit (default .gpukit, which
#       ../shared/gpu/make-kit.sh made) what ctrain-serve, ctrain-score and ctrain-registry
#       need there: Boost's headers (Beast, Asio) and OpenSSL's (libboost1.81-dev, libssl-dev;
#       about 13 MB more to carry). The node's own libcrypto.so.3 is linked. Without them the
#       node build has no serving programs and gpu_bench.py's scoring row says so.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--serving" ]; then
  kit=${2:-.gpukit}
  [ -d "$kit/debs" ] || { echo "node-kit: $kit/debs does not exist (run ../shared/gpu/make-kit.sh first)" >&2; exit 1; }
  (cd "$kit/debs" && apt-get download libboost1.81-dev libssl-dev)
  du -sh "$kit"
  exit 0
fi
kit=.nodekit
rm -rf "$kit" && mkdir -p "$kit/debs" "$kit/data"
(cd "$kit/debs" && apt-get download libcli11-dev nlohmann-json3-dev googletest libgloo-dev \
  libonnx-dev libonnx1 libonnxifi libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32)
if [ -d /usr/share/datasets/fashion-mnist ]; then
  cp /usr/share/datasets/fashion-mnist/*.gz "$kit/data/"
else
  echo "node-kit: no /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist); kit has no data" >&2
fi
ls "$kit/debs"
du -sh "$kit"
