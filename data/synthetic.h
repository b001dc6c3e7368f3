#pragma once
// --synthetic-data: random images of the right shape, like torchvision's FakeData, so a
// model's speed can be measured apart from the input pipeline (decoding, augmentation,
// copies). One batch of N(0, 1) pixels and uniform labels is made once, from the seed, on the
// training device and handed out at every step.
#include <torch/torch.h>

#include "data/batch.h"
#include "data/sampler.h"

namespace ctrain::data {

class SyntheticSource : public BatchSource {
 public:
  // `samples` in the whole job, shared out among ranks as ShardSampler shares them (`pad`: as
  // for training; without it, as for evaluation), in batches of `batch_size` (the last one
  // shorter).
  SyntheticSource(int64_t samples, int64_t batch_size, int64_t image_size, int64_t classes,
                  int64_t rank, int64_t world, uint64_t seed, torch::Device device, bool pad = true);
  void start_epoch(int64_t) override { next_ = 0; }
  std::optional<Batch> next() override;
  int64_t batches_per_epoch() const override { return (local_ + batch_size_ - 1) / batch_size_; }
  int64_t samples_per_epoch() const override { return local_; }

 private:
  int64_t batch_size_, local_, next_ = 0;
  torch::Tensor input_, target_;
};

}  // namespace ctrain::data
