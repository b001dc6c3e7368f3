// The loader's whole per-image path (header walk, transform plan, reduced-scale decode, crop,
// resize, flip, normalize) on untrusted bytes. Failures must be ctrain::Error; anything else
// escaping, or any out-of-bounds access, is a finding. The first byte picks the mode.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  ctrain::data::ImageTransform t;
  t.mode = (mode & 1) ? ctrain::data::Augment::kEval : ctrain::data::Augment::kTrain;
  t.size = 16 + 8 * ((mode >> 2) & 3);  // small outputs keep executions fast
  t.resize = t.size * 256 / 224;
  ctrain::data::DecodeOptions d;
  d.reduced_decode = (mode & 2) != 0;
  d.max_image_pixels = 1 << 22;  // within libFuzzer's memory limit (and OpenCV's own cap in scripts/fuzz.sh)
  std::vector<float> out(static_cast<size_t>(3) * t.size * t.size);
  std::mt19937_64 rng(mode);
  try {
    ctrain::data::decode_and_transform(bytes, "fuzz.img", t, d, rng, out.data());
  } catch (const ctrain::Error&) {
  }
  return 0;
}
