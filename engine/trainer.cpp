#include "engine/trainer.h"

#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "distributed/ddp.h"
#include "engine/checkpointer.h"
#include "engine/run_log.h"
#include "engine/step.h"
#include "core/stop.h"

namespace ctrain::engine {
namespace {

using Clock = std::chrono::steady_clock;

double step_lr(const OptimConfig& o, int64_t epoch) {
  // StepLR in closed form: the value depends only on the epoch, so a resumed run needs no
  // scheduler state (LibTorch's StepLR object would have to be stepped back into place).
  if (o.lr_step_size <= 0) return o.learning_rate;
  return o.learning_rate * std::pow(o.lr_gamma, static_cast<double>(epoch / o.lr_step_size));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

// --on-nan skip: whether the loss is finite on every rank (one host sync, one allreduce).
bool finite_everywhere(const torch::Tensor& loss, distributed::ProcessGroup* pg) {
  torch::Tensor bad = loss.detach().isfinite().logical_not().to(torch::kFloat32).reshape({1});
  if (pg != nullptr) {
    if (pg->backend() != "nccl") bad = bad.cpu();
    pg->allreduce_sum(bad, "allreduce of the non-finite loss flag");
  }
  return bad.item<float>() == 0.0f;
}

StepOptions step_options(const TrainConfig& cfg, distributed::ProcessGroup* pg) {
  StepOptions o;
  o.amp = cfg.amp;
  o.channels_last = cfg.channels_last;
  if (cfg.on_nan == OnNan::kSkip) {  // every rank skips the same step
    o.accept = [pg](const torch::Tensor& loss) { return finite_everywhere(loss, pg); };
  }
  o.cuda_graph = cfg.cuda_graph;
  o.accumulate = cfg.dist.accumulate;
  return o;
}

void say_graph_status(const TrainStep& step) {
  if (step.graph_status().empty()) {
    std::cout << "--cuda-graph: each batch shape's step is captured after " << TrainStep::kGraphWarmup
              << " eager steps, and again when the learning rate changes\n";
  } else {
    std::cout << "--cuda-graph: running eagerly: " << step.graph_status() << "\n";
  }
  std::cout << std::flush;
}

nlohmann::json run_config(const TrainConfig& cfg, const Runtime& rt, const TrainHooks& hooks) {
  nlohmann::json c = cfg.to_json();
  c["app"] = hooks.app_config;
  c["world_size"] = rt.launch.world_size;
  return c;
}

// One epoch of training steps, and its figures summed over the ranks.
class EpochLoop {
 public:
  EpochLoop(const TrainConfig& cfg, const Runtime& rt, TrainStep& step, data::BatchSource& data,
            const TrainHooks& hooks, std::string ckpt_dir)
      : cfg_(cfg), rt_(rt), step_(step), data_(data), hooks_(hooks), ckpt_dir_(std::move(ckpt_dir)) {}

  // Trains epoch `epoch` at learning rate `lr`; its per-step record stays in trace().
  EpochStats run(int64_t epoch, double lr) {
    data_.start_epoch(epoch);
    const int64_t steps = data_.batches_per_epoch();
    Progress progress(epoch, cfg_.epochs, steps, cfg_.log_interval, rt_.is_rank0(), rt_.launch.world_size);
    // Per-step losses and the correct count stay on the device: reading them is a host sync,
    // done once per epoch (which also finds the first non-finite step for --on-nan stop).
    trace_.step_loss = torch::zeros({steps}, torch::TensorOptions().device(rt_.device));
    trace_.step_size.assign(static_cast<size_t>(steps), 0.0f);
    step_.reset_correct();
    int64_t samples = 0, step = 0;
    phases_ = EpochPhases{};
    const auto t_epoch = Clock::now();
    for (;;) {
      auto t_phase = Clock::now();
      auto batch = data_.next();
      phases_.data_s += seconds_since(t_phase);
      if (!batch) break;
      if (stop_signal() != 0) {  // checked first: no message is built on the steps that go on
        throw_if_stopped("in epoch " + std::to_string(epoch) + " at step " + std::to_string(step) + " of " +
                             std::to_string(steps),
                         "the last good checkpoint is in " + ckpt_dir_ + "; rerun with --resume to continue");
      }
      if (hooks_.before_step) hooks_.before_step(epoch, step + 1, batch->input);
      t_phase = Clock::now();
      // ---- TRAINING STEP BEGIN ---------------------------------------------------------
      const TrainStep::Result out =
          step_.run(batch->input, batch->target, MicroBatch{step, cfg_.dist.accumulate, steps});
      // ---- TRAINING STEP END: everything that follows in the loop is bookkeeping ---------
      ++step;
      const double step_s = seconds_since(t_phase);
      phases_.step_s += step_s;
      if (step_s > phases_.slowest_step_s) {
        phases_.slowest_step_s = step_s;
        phases_.slowest_step = step;
      }
      if (!out.accepted) {
        ++skipped_steps_;
        continue;
      }
      torch::NoGradGuard no_grad;
      const int64_t size = batch->target.size(0);
      trace_.step_loss[step - 1].copy_(out.loss);
      trace_.step_size[static_cast<size_t>(step - 1)] = static_cast<float>(size);
      samples += size;
      t_phase = Clock::now();
      progress.step(step, samples, out.loss);  // reads the loss every --log-interval steps
      phases_.progress_s += seconds_since(t_phase);
    }
    return figures(epoch, lr, samples, t_epoch);
  }

  const EpochTrace& trace() const { return trace_; }

 private:
  EpochStats figures(int64_t epoch, double lr, int64_t samples, Clock::time_point t_epoch) {
    // Before the copy of the sizes: a pageable host-to-device copy waits for the queued epoch.
    const auto t_sync = Clock::now();
    const int64_t steps = trace_.step_loss.size(0);
    const torch::Tensor sizes =
        torch::from_blob(trace_.step_size.data(), {steps}, torch::kFloat32).to(rt_.device);
    const auto sums = global_sums((trace_.step_loss * sizes).sum(), step_.correct(), samples, rt_.pg.get(),
                                  "training metrics");
    EpochStats st;
    st.phases = phases_;
    st.phases.sync_s = seconds_since(t_sync);
    // Timed after global_sums' host sync: on a GPU the loop only queues the epoch's work.
    st.seconds = seconds_since(t_epoch);
    st.epoch = epoch;
    st.epochs = cfg_.epochs;
    st.train_loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
    st.train_acc = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
    st.samples_per_sec = sums[2] / std::max(1e-9, st.seconds);
    st.lr = lr;
    st.momentum = cfg_.optim.momentum;
    if (!std::isfinite(st.train_loss)) {
      // Steps skipped by --on-nan skip hold 0: only a trained non-finite step counts here.
      const torch::Tensor bad = trace_.step_loss.isfinite().logical_not().nonzero();
      const int64_t bad_step = bad.numel() > 0 ? bad[0][0].item<int64_t>() + 1 : 0;
      throw Error("training loss became non-finite in epoch " + std::to_string(epoch) +
                      (bad_step > 0 ? ", step " + std::to_string(bad_step) + " of " + std::to_string(steps)
                                    : std::string(" (on another rank)")) +
                      ": stopping before it reaches a checkpoint",
                  "lower --learning-rate, or --on-nan skip; the last good checkpoint is in " + ckpt_dir_);
    }
    if (skipped_steps_ > 0 && rt_.is_rank0()) {
      std::cerr << "warning: skipped " << skipped_steps_ << " step(s) with a non-finite loss so far\n";
    }
    return st;
  }

  const TrainConfig& cfg_;
  const Runtime& rt_;
  TrainStep& step_;
  data::BatchSource& data_;
  const TrainHooks& hooks_;
  std::string ckpt_dir_;
  EpochTrace trace_;
  EpochPhases phases_;
  int64_t skipped_steps_ = 0;  // over the run, for the warning
};

}  // namespace

TrainResult train(const TrainConfig& cfg_in, Runtime& rt, Model& model, data::BatchSource& train_data,
                  data::BatchSource& val_data, const TrainHooks& hooks) {
  const auto t_start = Clock::now();
  TrainConfig cfg = cfg_in;
  // A launcher restart (TORCHELASTIC_RESTART_COUNT > 0) continues from the checkpoints.
  if (rt.launch.restart_count > 0 && cfg.checkpoint.resume_from.empty()) cfg.checkpoint.resume = true;
  const nlohmann::json config = run_config(cfg, rt, hooks);
  Checkpointer checkpointer(cfg, rt, *model.module, model.spec.to_json(), config);
  // Once, resolved, when the output directory and the resume point are settled.
  if (rt.is_rank0()) std::cout << "config: " << config.dump() << std::endl;

  model.module->to(rt.device);
  if (cfg.channels_last) to_channels_last(*model.module);
  const auto optimizer = make_optimizer(cfg.optim, model.module->parameters());
  const CheckpointMeta resumed = checkpointer.resume(*model.module, *optimizer);
  std::unique_ptr<distributed::DistributedDataParallel> ddp;
  if (rt.pg) {
    ddp = std::make_unique<distributed::DistributedDataParallel>(model.module, *rt.pg, cfg.dist.bucket_mb);
    ddp->broadcast_from_rank0();
  }
  RunLog log(cfg, rt, hooks.on_epoch);
  TrainStep step(model, *optimizer, ddp.get(), rt.device, step_options(cfg, rt.pg.get()));
  if (GradScaler* scaler = step.scaler(); scaler != nullptr && resumed.loss_scale) {
    try {
      scaler->restore(resumed.loss_scale->scale, resumed.loss_scale->growth_tracker);
    } catch (const Error& e) {
      throw Error(checkpointer.resume_path() + ": " + e.what());
    }
    if (rt.is_rank0()) {
      std::cout << "fp16 loss scale " << scaler->scale() << " resumed (" << scaler->growth_tracker()
                << " good steps toward the next growth)" << std::endl;
    }
  }
  if (cfg.cuda_graph && rt.is_rank0()) say_graph_status(step);
  EpochLoop loop(cfg, rt, step, train_data, hooks, checkpointer.dir());

  TrainResult result;
  result.first_epoch = resumed.epoch + 1;
  result.best_val_acc = resumed.best_val_acc;
  result.best_epoch = resumed.best_epoch;
  for (int64_t epoch = result.first_epoch; epoch < cfg.epochs; ++epoch) {
    const double lr = step_lr(cfg.optim, epoch);
    set_lr(*optimizer, lr);
    model.module->train();
    EpochStats st = loop.run(epoch, lr);
    auto t_phase = Clock::now();
    st.val = evaluate(model, val_data, rt.device, rt.pg.get(), cfg.channels_last);
    st.phases.eval_s = seconds_since(t_phase);
    st.is_best = result.best_epoch < 0 || st.val.acc > result.best_val_acc;
    if (st.is_best) {
      result.best_val_acc = st.val.acc;
      result.best_epoch = epoch;
    }
    st.best_val_acc = result.best_val_acc;
    std::optional<LossScale> loss_scale;
    if (const GradScaler* scaler = step.scaler()) loss_scale = LossScale{scaler->scale(), scaler->growth_tracker()};
    t_phase = Clock::now();
    checkpointer.after_epoch(st, result.best_epoch, *model.module, *optimizer, loss_scale);
    st.phases.checkpoint_s = seconds_since(t_phase);
    log.epoch(st, loop.trace());
    result.final_val_acc = st.val.acc;
    ++result.epochs_run;
  }
  checkpointer.finish(result.epochs_run, *model.module);
  result.seconds = seconds_since(t_start);
  return result;
}

}  // namespace ctrain::engine
