#!/usr/bin/env bash
# Installs the PyTorch 2.11 wheel (CUDA 13.0 build, the GPU node's LibTorch), torchvision 0.26,
# nvJPEG, onnxruntime and TensorBoard into a virtual environment that every checkout on this
# machine finds again: $CTRAIN_TORCH_HOME, default ~/.cache/ctrain/torch-2.11. It does nothing
# when that is already there. The list is scripts/torch-wheel-requirements.txt (pinned, no
# dependency resolution: the resolver would add 2 GB of CUDA wheels the toolkit already has).
#   scripts/install-torch-wheel.sh                install (if needed), print nothing else
#   scripts/install-torch-wheel.sh --torch-dir    install (if needed), print the torch package
#                                                 folder: CMAKE_PREFIX_PATH for CMake
#   scripts/install-torch-wheel.sh --python       ... print the environment's python3
# Needs /usr/bin/python3 with venv (python3-venv) and the CUDA 13.0 toolkit in /usr/local/cuda,
# which provides the CUDA libraries the wheel loads (cuBLAS, cuDNN, NCCL, cudart, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=${CTRAIN_TORCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ctrain/torch-2.11}
req=$root/scripts/torch-wheel-requirements.txt
# The stamp names the requirements' content: a changed list installs afresh.
stamp=$home/.installed-$(sha256sum "$req" | cut -c1-16)
py=$home/venv/bin/python3

if [ ! -f "$stamp" ]; then
  [ -f /usr/local/cuda/include/cuda_runtime.h ] ||
    echo "install-torch-wheel: warning: no CUDA toolkit in /usr/local/cuda; torch will not load without its libraries" >&2
  echo "install-torch-wheel: installing torch 2.11.0 (CUDA 13.0), torchvision 0.26.0, nvJPEG, onnxruntime, tensorboard into $home" >&2
  start=$(date +%s)
  rm -rf "$home"
  mkdir -p "$home"
  /usr/bin/python3 -m venv "$home/venv"
  # Quiet, but a failure shows pip's own output.
  if ! "$py" -m pip install --quiet --no-cache-dir --no-deps --disable-pip-version-check -r "$req" >"$home/pip.log" 2>&1; then
    cat "$home/pip.log" >&2
    echo "install-torch-wheel: pip failed (log above, and in $home/pip.log)" >&2
    exit 1
  fi
  # nvidia-nvjpeg ships only the versioned library: give the linker its usual name.
  nv=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
  ln -sf libnvjpeg.so.13 "$nv/libnvjpeg.so"
  "$py" -c 'import torch, torchvision, onnxruntime, tensorboard' ||
    { echo "install-torch-wheel: the installed torch does not import (see above)" >&2; exit 1; }
  echo "install-torch-wheel: $(du -sh "$home" | cut -f1) in $(( $(date +%s) - start )) s;" \
       "torch $("$py" -c 'import torch; print(torch.__version__)')" >&2
  touch "$stamp"
fi

case "${1:-}" in
  --torch-dir) "$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))' ;;
  --python) echo "$py" ;;
  "") ;;
  *) echo "install-torch-wheel: unknown argument $1 (--torch-dir, --python)" >&2; exit 2 ;;
esac
