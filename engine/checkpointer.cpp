#include "engine/checkpointer.h"

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/fs.h"
#include "core/torch_error.h"

namespace ctrain::engine {
namespace {

namespace fs = std::filesystem;

// Picks the checkpoint to resume from; returns nullopt to start fresh. A corrupt or torn file
// is skipped (the newest good one wins); a checkpoint of another model is an error, because
// training over it would prune the user's checkpoints.
std::optional<std::string> resume_source(const TrainConfig& cfg, const std::string& ckpt_dir,
                                         const nlohmann::json& spec) {
  auto check_spec = [&](const std::string& path, const CheckpointMeta& m) {
    if (m.spec != spec) {
      throw Error(path + " holds a different model: " + m.spec.dump() + ", this run builds " +
                      spec.dump(),
                  "resume with the model options the checkpoint was written with, or use "
                  "another --output-dir");
    }
  };
  if (!cfg.checkpoint.resume_from.empty()) {
    require_regular_file(cfg.checkpoint.resume_from, "--resume-from");  // a FIFO would block the read
    check_spec(cfg.checkpoint.resume_from, checkpoint_peek(cfg.checkpoint.resume_from));
    return cfg.checkpoint.resume_from;
  }
  if (!cfg.checkpoint.resume) return std::nullopt;
  const auto all = checkpoint_list(ckpt_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    CheckpointMeta m;
    try {
      m = checkpoint_peek(*it);
    } catch (const Error& e) {
      std::cerr << "warning: skipping unreadable checkpoint: " << message_of(e) << "\n";
      continue;
    }
    check_spec(*it, m);
    return *it;
  }
  std::cout << "resume: no usable checkpoint in " << ckpt_dir << ", starting from scratch\n";
  return std::nullopt;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  if (keep <= 0) return;
  auto all = checkpoint_list(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
}

// A full disk is refused before training when not even the first save fits: model.pt plus one
// checkpoint (weights, buffers and, with momentum, one momentum buffer per weight; torch::save
// adds a few KB of archive). When all the checkpoints this run keeps may not fit, it warns
// and goes on, since space may be freed meanwhile; a save that then fails stops the run with
// the previous files intact (write_file_atomic).
void check_disk_space(const TrainConfig& cfg, const torch::nn::Module& module,
                      const std::string& ckpt_dir) {
  uint64_t weights = 0, buffers = 0;
  for (const auto& p : module.parameters()) weights += p.numel() * p.element_size();
  for (const auto& b : module.buffers()) buffers += b.numel() * b.element_size();
  const uint64_t archive = 64 * 1024;
  const uint64_t model_bytes = weights + buffers + archive;
  const uint64_t ckpt_bytes = model_bytes + (cfg.optim.momentum != 0.0 ? weights : 0);
  const uint64_t have =
      ensure_free_space(ckpt_dir, model_bytes + ckpt_bytes, "model.pt and the first checkpoint");
  const int64_t saves = cfg.checkpoint.every > 0 ? cfg.epochs / cfg.checkpoint.every + 1 : 1;
  const int64_t kept = cfg.checkpoint.keep > 0 ? std::min(cfg.checkpoint.keep, saves) : saves;
  const uint64_t run_bytes = model_bytes + static_cast<uint64_t>(kept + 1) * ckpt_bytes;
  if (have < run_bytes) {
    std::cerr << "warning: " << cfg.output_dir << " has " << megabytes(have) << " free; this run's "
              << kept << " checkpoint(s) and model.pt may need " << megabytes(run_bytes) << "\n";
  }
}

}  // namespace

Checkpointer::Checkpointer(const TrainConfig& cfg, const Runtime& rt, const torch::nn::Module& module,
                           nlohmann::json spec, nlohmann::json run_config)
    : cfg_(cfg), rt_(rt), dir_((fs::path(cfg.output_dir) / "checkpoints").string()),
      model_path_((fs::path(cfg.output_dir) / "model.pt").string()) {
  resume_from_ = resume_source(cfg, dir_, spec);
  meta_.spec = std::move(spec);
  meta_.config = std::move(run_config);
  if (rt.is_rank0()) {
    ensure_writable_dir(cfg.output_dir);
    ensure_writable_dir(dir_);
    check_disk_space(cfg, module, dir_);
  }
}

const CheckpointMeta& Checkpointer::resume(torch::nn::Module& module, torch::optim::Optimizer& optimizer) {
  if (resume_from_) {
    const CheckpointMeta loaded = checkpoint_load(*resume_from_, module, &optimizer);
    meta_.epoch = loaded.epoch;
    meta_.best_val_acc = loaded.best_val_acc;
    meta_.best_epoch = loaded.best_epoch;
    meta_.loss_scale = loaded.loss_scale;
    if (rt_.is_rank0()) std::cout << "resumed from " << *resume_from_ << " (epoch " << meta_.epoch << " done)\n";
  }
  if (distributed::ProcessGroup* pg = rt_.pg.get()) {
    // Each rank checks sum == W * own: all ranks pass only if every value equals the mean.
    torch::Tensor e = torch::tensor({meta_.epoch}, torch::kInt64);
    if (pg->backend() == "nccl") e = e.to(rt_.device);
    pg->allreduce_sum(e, "resume epoch agreement");
    e = e.cpu();
    if (e[0].item<int64_t>() != meta_.epoch * pg->size()) {
      throw Error("ranks resume from different epochs (this rank: " + std::to_string(meta_.epoch) + ")",
                  "every rank must see the same --output-dir/checkpoints (a shared file system)");
    }
  }
  return meta_;
}

void Checkpointer::save(const std::string& path, torch::nn::Module& module, torch::optim::Optimizer* optimizer,
                        const std::string& what) {
  if (rt_.is_rank0()) checkpoint_save(path, module, optimizer, meta_);
  // No rank runs ahead of a save: a crash right after it restarts everyone from it.
  if (rt_.pg) rt_.pg->barrier(what);
}

void Checkpointer::after_epoch(const EpochStats& st, int64_t best_epoch, torch::nn::Module& module,
                               torch::optim::Optimizer& optimizer, std::optional<LossScale> loss_scale) {
  meta_.epoch = st.epoch;
  meta_.loss_scale = loss_scale;
  meta_.best_val_acc = st.best_val_acc;
  meta_.best_epoch = best_epoch;
  if (cfg_.keep_best && st.is_best) save(model_path_, module, nullptr, "best model save");
  const bool last = st.epoch + 1 == cfg_.epochs;
  if (last || (cfg_.checkpoint.every > 0 && (st.epoch + 1) % cfg_.checkpoint.every == 0)) {
    save(checkpoint_path(dir_, st.epoch), module, &optimizer, "checkpoint save of epoch " + std::to_string(st.epoch));
    if (rt_.is_rank0()) prune_checkpoints(dir_, cfg_.checkpoint.keep);
  }
}

void Checkpointer::finish(int64_t epochs_run, torch::nn::Module& module) {
  if (!cfg_.keep_best || (epochs_run == 0 && !fs::exists(model_path_))) {
    save(model_path_, module, nullptr, "final model save");
  }
}

}  // namespace ctrain::engine
