// .safetensors headers are untrusted JSON with sizes and offsets: only ctrain::Error may
// come out, and every tensor returned must own exactly the bytes its shape says.
#include "core/error.h"
#include "fuzz/fuzz_input.h"
#include "models/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    for (const auto& [name, t] : ctrain::models::read_safetensors(fuzz_write_file(data, size))) {
      if (t.numel() > 0) (void)t.sum();  // touches every element (ASan checks the reads)
    }
  } catch (const ctrain::Error&) {
  }
  return 0;
}
