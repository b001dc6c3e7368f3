#include "engine/run_log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/fs.h"
#include "tracking/events.h"

namespace ctrain::engine {
namespace {

// One epoch's scalars, with the epoch as the step, and the training loss every `interval`
// steps (global step = epoch * steps + step), read from the device once for the epoch.
void write_epoch_events(tracking::EventWriter& w, const EpochStats& st, const torch::Tensor& step_loss,
                        const std::vector<float>& step_size, int64_t interval) {
  w.scalar("train/loss", st.epoch, st.train_loss);
  w.scalar("train/acc", st.epoch, st.train_acc);
  w.scalar("val/loss", st.epoch, st.val.loss);
  w.scalar("val/acc", st.epoch, st.val.acc);
  w.scalar("lr", st.epoch, st.lr);
  w.scalar("samples_per_sec", st.epoch, st.samples_per_sec);
  const torch::Tensor host = step_loss.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* loss = host.data_ptr<double>();
  const int64_t steps = host.size(0);
  for (int64_t i = interval - 1; i < steps; i += interval) {
    if (step_size[static_cast<size_t>(i)] == 0.0f) continue;  // skipped by --on-nan skip
    w.scalar("train/loss_step", st.epoch * steps + i + 1, loss[i]);
  }
}

}  // namespace

Progress::Progress(int64_t epoch, int64_t epochs, int64_t steps, int64_t interval, bool enabled,
                   int64_t world_size)
    : epoch_(epoch), epochs_(epochs), steps_(steps), interval_(interval), world_(world_size),
      tty_(::isatty(STDOUT_FILENO) == 1), enabled_(enabled), start_(Clock::now()), last_(start_) {}

void Progress::step(int64_t done, int64_t samples, const torch::Tensor& loss) {
  if (!enabled_) return;
  const auto now = Clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  const bool due = interval_ > 0 ? done % interval_ == 0 : since_last >= (tty_ ? 0.1 : 10.0);
  if (!due) return;
  last_ = now;
  const double rate = samples * world_ / std::max(1e-9, seconds_since(start_));
  char line[160];
  std::snprintf(line, sizeof(line), "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f samples/s",
                static_cast<long long>(epoch_), static_cast<long long>(epochs_ - 1),
                static_cast<long long>(done), static_cast<long long>(steps_), loss.item<double>(), rate);
  if (tty_) {
    std::printf("\r%-79s", line);
    dirty_ = true;
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

Progress::~Progress() {
  if (dirty_) std::printf("\r%-79s\r", "");
}

RunLog::RunLog(const TrainConfig& cfg, const Runtime& rt, std::function<void(const EpochStats&)> on_epoch)
    : rank0_(rt.is_rank0()), world_size_(rt.launch.world_size),
      loss_step_interval_(cfg.log_interval > 0 ? cfg.log_interval : 10), output_dir_(cfg.output_dir),
      on_epoch_(std::move(on_epoch)) {
  if (!rank0_) return;
  const std::string metrics_path = (std::filesystem::path(output_dir_) / "metrics.jsonl").string();
  if (const uint64_t torn = drop_torn_last_line(metrics_path); torn > 0) {
    std::cerr << "warning: dropped a torn last line (" << torn << " bytes, no newline) from " << metrics_path << "\n";
  }
  metrics_.open(metrics_path, std::ios::app);
  if (!metrics_) throw Error("cannot open " + output_dir_ + "/metrics.jsonl for appending");
  if (tracking::event_files_available()) events_ = std::make_unique<tracking::EventWriter>(output_dir_);
}

RunLog::~RunLog() = default;

void RunLog::epoch(const EpochStats& st, const EpochTrace& trace) {
  if (!rank0_) return;
  metrics_ << nlohmann::json{{"epoch", st.epoch},
                             {"train_loss", st.train_loss},
                             {"training_acc", st.train_acc},
                             {"val_loss", st.val.loss},
                             {"validation_acc", st.val.acc},
                             {"best_val_acc", st.best_val_acc},
                             {"seconds", st.seconds},
                             {"samples_per_sec", st.samples_per_sec},
                             {"lr", st.lr},
                             {"momentum", st.momentum},
                             {"world_size", world_size_},
                             {"phases",
                              {{"data_s", st.phases.data_s},
                               {"step_s", st.phases.step_s},
                               {"sync_s", st.phases.sync_s},
                               {"progress_s", st.phases.progress_s},
                               {"slowest_step", st.phases.slowest_step},
                               {"slowest_step_s", st.phases.slowest_step_s},
                               {"eval_s", st.phases.eval_s},
                               {"checkpoint_s", st.phases.checkpoint_s}}}}
                  .dump()
           << std::endl;
  if (!metrics_) {
    throw Error("cannot append to " + output_dir_ + "/metrics.jsonl: " + std::strerror(errno),
                "check free disk space; the checkpoints saved so far are intact");
  }
  if (events_) {
    write_epoch_events(*events_, st, trace.step_loss, trace.step_size, loss_step_interval_);
    events_->flush();  // TensorBoard shows the run while it trains
  }
  if (on_epoch_) on_epoch_(st);
}

}  // namespace ctrain::engine
