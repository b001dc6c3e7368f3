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
//
// Semantics follow PyTorch's DDP with find_unused_parameters=True and broadcast_buffers=True:
// a parameter unused on some ranks is averaged with zeros from those; one unused on every rank
// keeps its .grad untouched (undefined after zero_grad(set_to_none)), so the optimizer skips
// it; a second backward into the same synchronised step is an error.
#include <torch/torch.h>

#include <memory>
#include <string>

#include "distributed/process_group.h"

namespace ctrain::distributed {

class DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module, ProcessGroup& pg,
                          double bucket_mb = 25.0);
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Checks that every rank built the same model (names, shapes, dtypes of parameters and
  // buffers; an error on every rank naming the first difference), makes every rank's
  // parameters and buffers equal to rank 0's in one coalesced broadcast, then check_replicas().
  void broadcast_from_rank0();
  // Compares a checksum of every parameter and buffer with rank 0's; throws on every rank,
  // naming the first differing tensor, if any rank differs. Host syncs: start-up only.
  void check_replicas(const std::string& when);
  // Call before each training forward: copies all of rank 0's buffers (BatchNorm running
  // statistics and num_batches_tracked) to every rank, as PyTorch's DDP does with
  // broadcast_buffers=True, in one coalesced broadcast into a buffer allocated once. A no-op
  // for modules without buffers.
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
