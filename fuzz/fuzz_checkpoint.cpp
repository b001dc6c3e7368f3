// Checkpoints: the header (magic, version, size, CRC) is checked first; inputs whose first
// byte is odd are wrapped in a valid header so the payload parser (LibTorch's archive
// reader) is fuzzed too. Only ctrain::Error may come out.
#include <zlib.h>

#include "core/error.h"
#include "engine/checkpoint.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (size > 0 && (data[0] & 1)) {
    std::string h = "CTRAINCK";
    auto put = [&h](uint64_t v, int n) {
      for (int i = 0; i < n; ++i) h.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    put(1, 4);
    put(size - 1, 8);
    put(crc32(0L, reinterpret_cast<const Bytef*>(data + 1), static_cast<uInt>(size - 1)), 4);
    bytes = h + bytes.substr(1);
  }
  const std::string& path = fuzz_write_file(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  try {
    ctrain::engine::checkpoint_peek(path);
  } catch (const ctrain::Error&) {
  }
  try {
    ctrain::engine::checkpoint_tensors(path);
  } catch (const ctrain::Error&) {
  }
  return 0;
}
