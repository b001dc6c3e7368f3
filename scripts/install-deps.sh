#!/usr/bin/env bash
# Installs ctrain's Debian 12 build/test dependencies. A no-op (no apt, no root needed) when
# everything is already installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread   # without openblas-pthread LibTorch uses reference BLAS (~20x slower)
  libgloo-dev                         # c10d's ProcessGroupGloo.hpp includes gloo headers
  libopencv-dev libonnx-dev libprotobuf-dev
  libjpeg62-turbo-dev                 # JPEGs decoded by region (jpeg_crop_scanline) in the image pipeline
  protobuf-compiler                   # TensorBoard event messages from tracking/tensorboard.proto
  libopenmpi-dev openmpi-bin
  iptables libnetfilter-queue-dev     # the multi-node tests' slow, lossy link where the kernel has no netem
  libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libboost-dev libssl-dev             # ctrain-serve's HTTP layer (Boost.Beast); SHA-256 for the model registry
  libcpp-httplib-dev                  # the serve tests' HTTP client
  clang-14 libclang-rt-14-dev          # libFuzzer + sanitizers for `make fuzz`
  dataset-fashion-mnist               # the embedded default data (IDX files)
  python3-torch python3-torchvision   # PyTorch peers: parity tests and benchmarks
  python3-venv                        # the PyTorch 2.11 wheel's environment (scripts/install-torch-wheel.sh)
  python3-flask python3-pil wrk       # the scoring-service peer (Flask + PyTorch) and its load generator
  python3-onnx                        # an independent ONNX checker for the exported files
  python3-protobuf                    # an independent reader of the TensorBoard event files
  chromium                            # renders the report pages in tests (headless)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to apt-get install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
