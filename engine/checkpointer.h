#pragma once
// The run's checkpoints as one component: where it resumes from (and that every rank agrees),
// what it saves after each epoch (the periodic checkpoint, pruned, and model.pt), the space
// check before the first write. The file format is engine/checkpoint.h's.
#include <torch/torch.h>

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/runtime.h"
#include "engine/stats.h"

namespace ctrain::engine {

class Checkpointer {
 public:
  // Settles what to resume from before anything is created in --output-dir (a missing
  // --resume-from, or a checkpoint of another model than `spec`, is an error here); then rank 0
  // creates --output-dir and its checkpoints/ and refuses a disk without room for the first
  // save. `run_config` is saved in every file with `spec`.
  Checkpointer(const TrainConfig& cfg, const Runtime& rt, const torch::nn::Module& module,
               nlohmann::json spec, nlohmann::json run_config);

  // Loads the resume point, if any, into `module` and `optimizer`; with a process group, every
  // rank must resume from the same epoch (an --output-dir not shared between nodes would not).
  // Returns its meta (epoch -1 for a fresh start).
  const CheckpointMeta& resume(torch::nn::Module& module, torch::optim::Optimizer& optimizer);

  // After epoch `st.epoch`'s evaluation: model.pt when it is the best so far (keep_best), the
  // checkpoint on --checkpoint-every epochs and the last, pruned to --keep-checkpoints. Every
  // rank calls it; rank 0 writes, and no rank runs ahead of a save. `loss_scale`: an fp16
  // run's, saved with the checkpoint.
  void after_epoch(const EpochStats& st, int64_t best_epoch, torch::nn::Module& module,
                   torch::optim::Optimizer& optimizer, std::optional<LossScale> loss_scale = std::nullopt);
  // model.pt of the final weights (unless keep_best chose one, and one exists).
  void finish(int64_t epochs_run, torch::nn::Module& module);

  const std::string& dir() const { return dir_; }
  // The checkpoint resume() loaded from; empty for a fresh run.
  std::string resume_path() const { return resume_from_.value_or(""); }

 private:
  void save(const std::string& path, torch::nn::Module& module, torch::optim::Optimizer* optimizer,
            const std::string& what);

  const TrainConfig& cfg_;
  const Runtime& rt_;
  std::string dir_, model_path_;
  std::optional<std::string> resume_from_;
  CheckpointMeta meta_;
};

}  // namespace ctrain::engine
