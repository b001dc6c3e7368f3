#pragma once
// The contract between data/ and the engine's training loop.
#include <torch/torch.h>

#include <optional>

namespace ctrain::data {

struct Batch {
  torch::Tensor input;   // [B, ...] float
  torch::Tensor target;  // [B] int64 class indices
};

// A per-epoch stream of batches. The engine calls start_epoch(e) and then next() until it
// returns nullopt. The order within an epoch must depend only on (seed, epoch, rank,
// world_size) so that a resumed run replays exactly the batches an uninterrupted one would.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void start_epoch(int64_t epoch) = 0;
  virtual std::optional<Batch> next() = 0;
  // Batches this rank yields per epoch (the same on every rank).
  virtual int64_t batches_per_epoch() const = 0;
  // Samples this rank yields per epoch, padding included.
  virtual int64_t samples_per_epoch() const = 0;
};

}  // namespace ctrain::data
