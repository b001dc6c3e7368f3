#pragma once
// Which samples each rank sees, and an in-memory batch source built on it.
#include <torch/torch.h>

#include "data/batch.h"

namespace ctrain::data {

// PyTorch's DistributedSampler semantics, so shards match the Python peer's: the epoch's order
// is randperm(n) from a generator seeded with (seed + epoch) (or 0..n-1 without shuffle),
// padded by wrapping to a multiple of world_size, and rank r takes positions r, r+W, r+2W, ...
// Shards are disjoint apart from the padding, cover the dataset, and are equally long, so
// every rank takes the same number of steps. With world_size 1 this is a plain shuffle.
// pad=false (evaluation) skips the padding: shards then differ in length by at most one and
// their union is exactly the dataset, so global metrics count every sample once.
class ShardSampler {
 public:
  ShardSampler(int64_t dataset_size, int64_t rank, int64_t world_size, uint64_t seed,
               bool shuffle, bool pad = true);
  // The indices (int64 tensor) this rank visits in `epoch`, in order.
  torch::Tensor indices(int64_t epoch) const;
  int64_t samples_per_rank() const { return per_rank_; }
  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }

 private:
  int64_t size_, rank_, world_size_, per_rank_;
  uint64_t seed_;
  bool shuffle_, pad_;
};

// Batches gathered from tensors that hold a whole dataset (MNIST fits in 200 MB). Slicing the
// shard's index list into consecutive runs of `batch_size` means that with W ranks of batch b
// the union of one step's micro-batches is exactly the global batch (W*b samples) that one
// rank with batch W*b would take, which is what makes DDP runs comparable to 1-process runs.
// With a CUDA `device` the dataset is copied there once, each epoch's order follows it (the
// same randperm, made on the host), and a batch is gathered on the device: no host work per
// step beyond two kernel launches, and no host-to-device copy.
class TensorBatchSource : public BatchSource {
 public:
  TensorBatchSource(torch::Tensor inputs, torch::Tensor targets, int64_t batch_size,
                    ShardSampler sampler, torch::Device device = torch::kCPU);
  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t batches_per_epoch() const override;
  int64_t samples_per_epoch() const override { return sampler_.samples_per_rank(); }

 private:
  torch::Tensor inputs_, targets_, order_;
  int64_t batch_size_, pos_ = 0;
  ShardSampler sampler_;
};

}  // namespace ctrain::data
