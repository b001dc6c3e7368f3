// ctrain-serve's application/x-npy body (serve::npy_to_tensor, hand-written): any bytes must
// become a [N, 2, 2] float32 tensor whose values are all finite, or a BadInput; nothing else.
#include <cstdint>
#include <string>

#include "serve/handler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const torch::Tensor t = ctrain::serve::npy_to_tensor(bytes, {2, 2});
    if (t.dim() != 3 || t.size(0) < 1 || t.size(1) != 2 || t.size(2) != 2) __builtin_trap();
    if (t.scalar_type() != torch::kFloat32 || !t.isfinite().all().item<bool>()) __builtin_trap();
  } catch (const ctrain::serve::BadInput&) {
  }
  return 0;
}
