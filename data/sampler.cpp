#include "data/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"

namespace ctrain::data {

ShardSampler::ShardSampler(int64_t dataset_size, int64_t rank, int64_t world_size,
                           uint64_t seed, bool shuffle, bool pad)
    : size_(dataset_size), rank_(rank), world_size_(world_size), seed_(seed), shuffle_(shuffle),
      pad_(pad) {
  if (dataset_size <= 0) throw Error("ShardSampler: empty dataset");
  if (world_size <= 0 || rank < 0 || rank >= world_size) {
    throw Error("ShardSampler: rank " + std::to_string(rank) + " is outside world_size " +
                std::to_string(world_size));
  }
  per_rank_ = pad_ ? (size_ + world_size_ - 1) / world_size_
                  : (size_ - rank_ + world_size_ - 1) / world_size_;
}

torch::Tensor ShardSampler::indices(int64_t epoch) const {
  torch::Tensor order;
  if (shuffle_) {
    auto gen = at::detail::createCPUGenerator(seed_ + static_cast<uint64_t>(epoch));
    order = torch::randperm(size_, gen, torch::kInt64);
  } else {
    order = torch::arange(size_, torch::kInt64);
  }
  if (!pad_) return order.slice(0, rank_, size_, world_size_).contiguous();
  const int64_t total = per_rank_ * world_size_;
  if (total > size_) {
    // Wrap around (repeatedly, for tiny datasets) as DistributedSampler does.
    const int64_t reps = (total + size_ - 1) / size_;
    order = order.repeat({reps}).slice(0, 0, total);
  }
  return order.slice(0, rank_, total, world_size_).contiguous();
}

TensorBatchSource::TensorBatchSource(torch::Tensor inputs, torch::Tensor targets,
                                     int64_t batch_size, ShardSampler sampler, torch::Device device)
    : inputs_(inputs.to(device)),
      targets_(targets.to(device)),
      batch_size_(batch_size),
      sampler_(std::move(sampler)) {
  if (batch_size_ <= 0) throw ConfigError("--batch-size must be positive");
  if (inputs_.size(0) != targets_.size(0)) {
    throw Error("TensorBatchSource: " + std::to_string(inputs_.size(0)) + " inputs but " +
                std::to_string(targets_.size(0)) + " targets");
  }
}

void TensorBatchSource::start_epoch(int64_t epoch) {
  order_ = sampler_.indices(epoch).to(inputs_.device());
  pos_ = 0;
}

std::optional<Batch> TensorBatchSource::next() {
  if (!order_.defined()) throw Error("TensorBatchSource::next() before start_epoch()");
  const int64_t n = order_.size(0);
  if (pos_ >= n) return std::nullopt;
  const int64_t end = std::min(pos_ + batch_size_, n);
  torch::Tensor idx = order_.slice(0, pos_, end);
  pos_ = end;
  return Batch{inputs_.index_select(0, idx), targets_.index_select(0, idx)};
}

int64_t TensorBatchSource::batches_per_epoch() const {
  return (sampler_.samples_per_rank() + batch_size_ - 1) / batch_size_;
}

}  // namespace ctrain::data
