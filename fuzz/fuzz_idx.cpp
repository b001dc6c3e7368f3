// IDX files, raw or gzipped: only ctrain::Error may come out of read_idx.
#include "core/error.h"
#include "data/idx.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz_write_file(data, size);
  for (int ndim : {1, 3}) {
    try {
      const auto a = ctrain::data::read_idx(path, ndim);
      size_t count = 1;
      for (auto d : a.dims) count *= static_cast<size_t>(d);
      if (count != a.bytes.size()) __builtin_trap();  // the contract: prod(dims) bytes
    } catch (const ctrain::Error&) {
    }
  }
  return 0;
}
