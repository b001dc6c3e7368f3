#pragma once
// The one training loop. Apps build a model and data sources, fill a TrainConfig, and call
// train(); everything a run writes (checkpoints, metrics.jsonl, model.pt) is done here.
#include <torch/torch.h>

#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "distributed/launch.h"
#include "distributed/process_group.h"
#include "engine/config.h"
#include "engine/model.h"

namespace ctrain::engine {

struct EvalStats {
  double loss = 0.0;  // mean cross-entropy
  double acc = 0.0;   // fraction correct
  int64_t samples = 0;
};

struct EpochStats {
  int64_t epoch = 0;   // 0-based, as the reference scripts print it
  int64_t epochs = 0;  // total
  double train_loss = 0.0, train_acc = 0.0;
  EvalStats val;
  double seconds = 0.0;          // training part of the epoch (eval excluded)
  double samples_per_sec = 0.0;  // training samples / seconds
  double lr = 0.0, momentum = 0.0;
  double best_val_acc = 0.0;
  bool is_best = false;
};

struct TrainResult {
  int64_t first_epoch = 0;  // > 0 when resumed
  int64_t epochs_run = 0;
  double final_val_acc = 0.0;
  double best_val_acc = 0.0;
  int64_t best_epoch = -1;
  double seconds = 0.0;  // wall time of this process's train() call
};

struct TrainHooks {
  // Called after each epoch (after its checkpoint): the app prints in its own format.
  std::function<void(const EpochStats&)> on_epoch;
  // App-level options saved with the config in checkpoints (data paths, layer sizes).
  nlohmann::json app_config;
};

// What a process needs to know about where it runs. pg is null for a single process.
struct Runtime {
  torch::Device device = torch::kCPU;
  distributed::LaunchInfo launch;
  std::unique_ptr<distributed::ProcessGroup> pg;
  bool is_rank0() const { return launch.rank == 0; }
};

// Keeps freed memory in the process for the next step (glibc malloc: no mmap per large
// tensor, no trimming; unless the user set malloc options), applies --threads and --seed
// (seeded before the model is built so init is reproducible),
// resolves rank/world size from `flags` and the launch environment, resolves --device (cuda
// picks cuda:<local_rank>; "cuda" without a usable GPU is an error, never a silent CPU run),
// and when world_size > 1 joins the process group.
Runtime init_runtime(const TrainConfig& cfg, const distributed::DistFlags& flags = {},
                     const distributed::EnvLookup& env = distributed::process_env());

// Mean loss and accuracy of `model` over one pass of `data` (epoch 0 order), without grad.
// With a process group, each rank passes its shard and the figures are global.
// `channels_last`: 4-D batches go in as NHWC (for a model made so by to_channels_last).
EvalStats evaluate(Model& model, data::BatchSource& data, torch::Device device,
                   distributed::ProcessGroup* pg = nullptr, bool channels_last = false);

// Trains cfg.epochs epochs in total (resuming when asked, or when a launcher restarted the
// group), evaluating on `val` after each, checkpointing per cfg.checkpoint and writing
// cfg.output_dir/{metrics.jsonl, model.pt}. With rt.pg, gradients are averaged by DDP, the
// figures are global, and only rank 0 writes (the others wait at a barrier). The module is
// moved to rt.device. Throws ctrain::Error on bad input; files already written stay valid.
TrainResult train(const TrainConfig& cfg, Runtime& rt, Model& model,
                  data::BatchSource& train_data, data::BatchSource& val_data,
                  const TrainHooks& hooks);

}  // namespace ctrain::engine
