#include "data/synthetic.h"

#include "core/error.h"

namespace ctrain::data {

SyntheticSource::SyntheticSource(int64_t samples, int64_t batch_size, int64_t image_size, int64_t classes,
                                 int64_t rank, int64_t world, uint64_t seed, torch::Device device, bool pad)
    : batch_size_(batch_size),
      local_(ShardSampler(samples, rank, world, seed, /*shuffle=*/false, pad).samples_per_rank()) {
  if (samples <= 0 || batch_size <= 0 || image_size <= 0 || classes <= 0 || world <= 0) {
    throw ConfigError("synthetic data needs positive samples, batch size, image size and classes");
  }
  // Each rank's images differ (the seed and the rank), as its shard of a real folder would.
  auto gen = at::detail::createCPUGenerator(seed * 1000003 + static_cast<uint64_t>(rank));
  const int64_t n = std::min(batch_size, local_);
  input_ = at::randn({n, 3, image_size, image_size}, gen, torch::kFloat32).to(device);
  target_ = at::randint(classes, {n}, gen, torch::kInt64).to(device);
}

std::optional<Batch> SyntheticSource::next() {
  const int64_t start = next_ * batch_size_;
  if (start >= local_) return std::nullopt;
  ++next_;
  const int64_t size = std::min(batch_size_, local_ - start);
  return Batch{input_.narrow(0, 0, size), target_.narrow(0, 0, size)};
}

}  // namespace ctrain::data
