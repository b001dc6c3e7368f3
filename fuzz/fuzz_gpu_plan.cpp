// The GPU pipeline's host half (data/gpu_plan.h) on any image size and transform: the region
// the decoder is asked for must hold every pixel the kernel's arithmetic then reads. The
// region's pixels are an exact-size heap block, so a read outside it is an ASan finding; a
// region outside the image is an abort. Failures must be ctrain::Error.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/error.h"
#include "data/gpu_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  const int h = 1 + ((data[0] << 8 | data[1]) % 700), w = 1 + ((data[2] << 8 | data[3]) % 700);
  const uint8_t mode = data[4];
  ctrain::data::ImageTransform t;
  t.mode = (mode & 1) ? ctrain::data::Augment::kEval : ctrain::data::Augment::kTrain;
  t.size = 8 + 8 * ((mode >> 1) & 3);  // small outputs keep executions fast
  t.resize = t.size + ((mode >> 3) & 7) * t.size / 7;
  std::mt19937_64 rng(data[5]);
  try {
    const ctrain::data::SamplePlan plan = ctrain::data::plan_sample(h, w, t, rng);
    ctrain::data::augment::Sample s = ctrain::data::describe_sample(plan, t, h, w);
    const ctrain::data::Region r = ctrain::data::region_read(s, t.size);
    if (r.top < 0 || r.left < 0 || r.height < 1 || r.width < 1 || r.top + r.height > h || r.left + r.width > w) {
      std::abort();
    }
    const size_t bytes = static_cast<size_t>(r.height) * r.width * 3;
    std::unique_ptr<uint8_t[]> pixels(new uint8_t[bytes]);
    std::memset(pixels.get(), 0x5a, bytes);
    ctrain::data::attach_pixels(&s, r, pixels.get(), int64_t{r.width} * 3);
    std::vector<float> out(static_cast<size_t>(3) * t.size * t.size);
    ctrain::data::render_on_host(s, ctrain::data::normalize_of(t), t.size, out.data());
  } catch (const ctrain::Error&) {
  }
  return 0;
}
