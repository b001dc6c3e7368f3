#pragma once
// The one training loop. Programs build a model and data sources, fill a TrainConfig, and call
// train(); its phases are components of their own: the runtime (runtime.h), the checkpoints
// (checkpointer.h), the step (step.h), evaluation (evaluate.h) and the run's log (run_log.h).
#include <torch/torch.h>

#include <functional>

#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "engine/config.h"
#include "engine/evaluate.h"
#include "engine/model.h"
#include "engine/runtime.h"
#include "engine/stats.h"

namespace ctrain::engine {

struct TrainResult {
  int64_t first_epoch = 0;  // > 0 when resumed
  int64_t epochs_run = 0;
  double final_val_acc = 0.0;
  double best_val_acc = 0.0;
  int64_t best_epoch = -1;
  double seconds = 0.0;  // wall time of this process's train() call
};

struct TrainHooks {
  // Called after each epoch (after its checkpoint), on rank 0: the program prints in its own
  // format.
  std::function<void(const EpochStats&)> on_epoch;
  // Called before each training step with its epoch, its step (1-based) and the batch's input,
  // which it may change. The programs install the fault tests' injection here
  // (apps/common/test_faults.h); nothing else does.
  std::function<void(int64_t epoch, int64_t step, torch::Tensor& input)> before_step;
  // App-level options saved with the config in checkpoints (data paths, layer sizes).
  nlohmann::json app_config;
};

// Trains cfg.epochs epochs in total (resuming when asked, or when a launcher restarted the
// group), evaluating on `val` after each, checkpointing per cfg.checkpoint and writing
// cfg.output_dir/{metrics.jsonl, model.pt}. With rt.pg, gradients are averaged by DDP, the
// figures are global, and only rank 0 writes (the others wait at a barrier). The module is
// moved to rt.device. Throws ctrain::Error on bad input; files already written stay valid.
TrainResult train(const TrainConfig& cfg, Runtime& rt, Model& model,
                  data::BatchSource& train_data, data::BatchSource& val_data,
                  const TrainHooks& hooks);

}  // namespace ctrain::engine
