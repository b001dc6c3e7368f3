// The JPEG header walk reads marker lengths from untrusted bytes.
#include <cstdint>
#include <string>

#include "data/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int h = 0, w = 0;
  if (ctrain::data::jpeg_size(std::string(reinterpret_cast<const char*>(data), size), &h, &w)) {
    if (h <= 0 || w <= 0) __builtin_trap();
  }
  return 0;
}
