#pragma once
// Data parallelism for a single-device module: what torch.nn.parallel.DistributedDataParallel
// does in Python and LibTorch's C++ API lacks (pytorch/pytorch#48959).
//
// Parameters are grouped into buckets of about `bucket_mb` (in reverse registration order,
// the order backward produces their gradients). A post-hook on each parameter's gradient
// accumulator copies the accumulated .grad into its bucket; when a bucket is full its
// allreduce is launched asynchronously, so communication overlaps the rest of backward.
// Buckets are launched strictly in index order, which is the same on every rank. finish()
// waits for all buckets and writes the averaged gradients back into .grad.
#include <torch/torch.h>

#include <memory>

#include "distributed/process_group.h"

namespace ctrain::distributed {

class DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module, ProcessGroup& pg,
                          double bucket_mb = 25.0);
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Makes every rank's parameters and buffers equal to rank 0's.
  void broadcast_from_rank0();
  // Call before each training forward: copies rank 0's floating-point buffers (BatchNorm
  // running statistics) to every rank, as PyTorch's DDP does with broadcast_buffers=True, in
  // one coalesced broadcast. A no-op for modules without such buffers.
  void sync_buffers();
  // Call before backward: sync=false is no_sync (gradient accumulation: hooks do nothing and
  // gradients just accumulate locally), sync=true reduces this backward's (accumulated) grads.
  void prepare(bool sync);
  // Call after backward, before the optimizer step: waits for the bucket allreduces and sets
  // every parameter's .grad to the average over ranks. A no-op after prepare(false).
  void finish();

  int64_t num_buckets() const;

  struct State;  // shared with the autograd hooks, which hold it weakly

 private:
  std::shared_ptr<State> state_;
};

}  // namespace ctrain::distributed
