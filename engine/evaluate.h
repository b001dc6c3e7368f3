#pragma once
// Evaluation, and the global sums it and the training loop report: each rank passes its shard,
// one allreduce makes the figures the job's.
#include <torch/torch.h>

#include <array>
#include <string>

#include "data/batch.h"
#include "distributed/process_group.h"
#include "engine/model.h"
#include "engine/stats.h"

namespace ctrain::engine {

// Mean loss and accuracy of `model` over one pass of `data` (epoch 0 order), without grad.
// With a process group, each rank passes its shard and the figures are global.
// `channels_last`: 4-D batches go in as NHWC (for a model made so by to_channels_last).
EvalStats evaluate(Model& model, data::BatchSource& data, torch::Device device,
                   distributed::ProcessGroup* pg = nullptr, bool channels_last = false);

// (loss sum, correct count, sample count) summed over ranks: one host sync and one allreduce
// (`what` names it in an error).
std::array<double, 3> global_sums(const torch::Tensor& loss_sum, const torch::Tensor& correct,
                                  int64_t samples, distributed::ProcessGroup* pg,
                                  const std::string& what);

}  // namespace ctrain::engine
