#pragma once
// The trial scheduler: runs a trainer once per trial as a real process, reads the metrics.jsonl
// each trial appends to, applies the early-termination policy, and keeps the sweep's state on
// disk so that an interrupted sweep resumes where it stopped.
//
// SWEEP_DIR/
//   config.json         the settings (what --resume runs with)
//   journal.jsonl       every trial start, ASHA rung result and promotion, in order
//   sweep.jsonl         one line per finished trial: trial, params, status (completed,
//                       early_terminated, failed), best_metric, epochs_run, seconds, reason
//   best.json           the best finished trial's line, rewritten after each trial
//   report.html         charts of every trial (tracking/report.h), at the end
//   trials/NNN/         the trainer's --output-dir (metrics.jsonl, checkpoints) and log.txt
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tune/policy.h"
#include "tune/space.h"

namespace ctrain::tune {

struct SweepConfig {
  std::string program;             // --program: a command line, split at spaces (may be a launcher)
  std::vector<std::string> args;   // after "--": passed to every trial as they are
  std::string output_dir = "sweep";
  std::string metric = "validation_acc";
  std::string goal = "maximize";   // or "minimize"
  int64_t max_trials = 8;
  int64_t max_concurrent = 1;
  std::string sampler = "random";  // random | grid | tpe
  int64_t seed = 1;
  std::vector<std::string> params; // NAME=EXPRESSION
  PolicyConfig policy;
  double stop_grace_s = 30;        // seconds between a trial's SIGTERM and SIGKILL

  // Parses the parameters and checks every setting; throws ConfigError naming the flag.
  // `search_path`: the PATH the trials are started with, on which --program must be found.
  void validate(const std::string& search_path) const;
  nlohmann::json to_json() const;
  static SweepConfig from_json(const nlohmann::json& j);  // throws ConfigError on a bad file
};

// Runs the sweep (resume: continues the one in cfg.output_dir, whose config.json the caller
// has loaded), printing progress, decisions and the final table to `out`. Returns the exit
// code: 0 when the sweep ran to its end (failed trials included), 128 + signal when the sweep
// itself was stopped (resume it with --resume), 2 when a trial showed the settings are wrong
// (--metric never written, the program refusing its arguments).
// A stop signal (core/stop.h, installed by the program) stops the trials and returns.
int run_sweep(const SweepConfig& cfg, bool resume, std::ostream& out);

}  // namespace ctrain::tune
