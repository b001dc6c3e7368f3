#pragma once
// Private to tune/: the sweep's scheduler state and its steps. sweep.cpp holds the loop
// (resume, fill the slots, stop, finish); sweep_trials.cpp what happens to one trial (start,
// policy decision, exit, record).
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tune/policy.h"
#include "tune/sampler.h"
#include "tune/space.h"
#include "tune/sweep.h"
#include "tune/sweep_store.h"
#include "tune/trial.h"

namespace ctrain::tune {

namespace fs = std::filesystem;

// One sweep run: run_sweep() builds one and calls run().
class Sweep {
 public:
  Sweep(const SweepConfig& cfg, std::ostream& out);
  // Runs (or, with `resume`, continues) the sweep; run_sweep()'s exit code.
  int run(bool resume);

 private:
  // ---- state on disk (sweep_store.h) -------------------------------------------------------
  void journal(const nlohmann::json& j) { store_.journal(j); }

  // Rebuilds the scheduler's state from journal.jsonl, sweep.jsonl and the trials' metrics.
  void restore();
  void restore_records();

  // ---- trials ------------------------------------------------------------------------------
  void read_new_metrics(Trial& t);

  fs::path trial_dir(int64_t id) const { return store_.trial_dir(id); }
  std::vector<std::string> command(const Trial& t, bool resume) const;
  void spawn(Trial& t, bool resume);
  void start_new();

  // What the sampler learns from: trials not running that reported the metric, in trial order
  // (so the history does not depend on which finished first), loss = -metric when maximising.
  std::vector<Observation> observations() const;

  // The policy's decision on the intervals the trial reported since it last looked, each in
  // order (advancing t.evaluated): true at the first that says stop, with t.stop_reason set and
  // the decision printed. Both the poll and the trial's exit ask it, so a stop at the trial's
  // last epoch does not depend on which of them reads that epoch first.
  bool policy_stops(Trial& t);
  void apply_policy(Trial& t);
  void stop(Trial& t);

  // A trial's process ended with exit code `code` (128 + signal when killed): what it means is
  // classify_exit's decision (schedule.h), made on what is known now.
  void on_exit(Trial& t, int code);

  // ASHA: its value at the rung is the metric of the last epoch it trained.
  void pause_at_rung(Trial& t);
  void record(Trial& t, const std::string& status, const std::string& reason, int code);

  std::optional<int64_t> best_trial() const { return best_record(records_, maximize_); }
  void progress(bool force);

  // Reaps every trial whose process ended (each by its own pid); whether any had.
  bool reap();

  // ---- the loop ----------------------------------------------------------------------------
  int loop();

  // Starts what fills the free slots, as fill_slot (schedule.h) orders them.
  void fill_slots();

  // Stops every running trial (SIGTERM, SIGKILL after the grace) and returns the exit code.
  int shut_down();
  // The final table, best.json and report.html.
  void finish_outputs();

  SweepConfig c_;
  std::ostream& out_;
  bool maximize_;
  StopPolicy policy_;
  std::optional<Asha> asha_;
  fs::path dir_;
  SweepStore store_;
  Space space_;
  std::unique_ptr<Sampler> sampler_;
  int64_t max_trials_ = 0;
  std::map<int64_t, Trial> trials_;
  std::map<int64_t, nlohmann::json> records_;
  std::vector<int64_t> finished_order_;
  std::vector<int64_t> pending_restart_;
  int64_t next_index_ = 0;
  int64_t running_ = 0;
  std::string fatal_;
  bool interrupted_ = false;
  Clock::time_point t0_, last_progress_{};
};

}  // namespace ctrain::tune
