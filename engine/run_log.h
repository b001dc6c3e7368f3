#pragma once
// What a run shows and keeps of itself while it trains: the progress line of each epoch, and
// per epoch a metrics.jsonl line, TensorBoard scalars and the program's own line.
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/runtime.h"
#include "engine/stats.h"

namespace ctrain::tracking {
class EventWriter;
}  // namespace ctrain::tracking

namespace ctrain::engine {

// Seconds of the steady clock since `t0`: the run's own timings (epoch times, phases).
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One line per update on a terminal (redrawn with \r, at most 10 times a second); on a pipe or
// file a plain line every `interval` steps, or every ~10 s when no interval is set, so logs
// of fast epochs stay short and slow epochs still show life. Reading the loss is a host sync,
// so it happens only when a line is printed.
class Progress {
 public:
  // `world_size` scales this rank's sample rate to the job's (every rank takes equal steps).
  Progress(int64_t epoch, int64_t epochs, int64_t steps, int64_t interval, bool enabled,
           int64_t world_size);
  void step(int64_t done, int64_t samples, const torch::Tensor& loss);
  // Clears the terminal line so the epoch summary starts on a clean line.
  ~Progress();

 private:
  using Clock = std::chrono::steady_clock;
  int64_t epoch_, epochs_, steps_, interval_, world_;
  bool tty_, enabled_, dirty_ = false;
  Clock::time_point start_, last_;
};

// The per-step record of an epoch: each step's mean loss (on the device; read once, for the
// log) and its batch size (0 for a step dropped by --on-nan skip).
struct EpochTrace {
  torch::Tensor step_loss;
  std::vector<float> step_size;
};

// Rank 0's record of the run in --output-dir; on other ranks it does nothing.
class RunLog {
 public:
  // Opens metrics.jsonl for appending (a torn last line, from a run killed mid-append, is
  // dropped first) and, where TensorBoard's format is available, a new events file (a resumed
  // run continues its steps). Throws ctrain::Error naming the file it cannot open.
  RunLog(const TrainConfig& cfg, const Runtime& rt, std::function<void(const EpochStats&)> on_epoch);
  ~RunLog();
  // The epoch's metrics.jsonl line (flushed: a crash loses no finished epoch), its TensorBoard
  // scalars with the training loss every --log-interval steps (10 when unset), then on_epoch.
  void epoch(const EpochStats& st, const EpochTrace& trace);

 private:
  bool rank0_;
  int64_t world_size_, loss_step_interval_;
  std::string output_dir_;
  std::ofstream metrics_;
  std::unique_ptr<tracking::EventWriter> events_;
  std::function<void(const EpochStats&)> on_epoch_;
};

}  // namespace ctrain::engine
