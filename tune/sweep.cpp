#include "tune/sweep.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "core/process.h"
#include "core/stop.h"
#include "tracking/report.h"
#include "tune/sampler.h"
#include "tune/schedule.h"
#include "tune/sweep_report.h"
#include "tune/sweep_store.h"
#include "tune/trial.h"

namespace ctrain::tune {
namespace fs = std::filesystem;

namespace {

class Sweep {
 public:
  Sweep(const SweepConfig& cfg, std::ostream& out)
      : c_(cfg), out_(out), maximize_(cfg.goal == "maximize"), policy_(cfg.policy, maximize_),
        asha_(cfg.policy.name == "asha" ? std::optional<Asha>(Asha(cfg.policy, maximize_)) : std::nullopt),
        dir_(cfg.output_dir), store_(dir_), t0_(Clock::now()) {
    for (const auto& p : c_.params) space_.push_back(parse_param(p));
    sampler_ = make_sampler(c_.sampler, space_, static_cast<uint64_t>(c_.seed));
    max_trials_ = c_.max_trials;
    if (sampler_->capacity() >= 0 && sampler_->capacity() < max_trials_) {
      out_ << "ctrain-sweep: the grid has " << sampler_->capacity() << " points; running " << sampler_->capacity()
           << " trials, not " << max_trials_ << "\n";
      max_trials_ = sampler_->capacity();
    }
  }

  int run(bool resume) {
    store_.lock();
    if (resume) {
      restore();
    } else {
      store_.create(c_);
    }
    store_.open_journal();
    out_ << "ctrain-sweep: " << max_trials_ << " trials of " << c_.program << ", " << c_.max_concurrent
         << " at a time, sampler " << c_.sampler << ", policy " << c_.policy.name << ", " << c_.goal << " "
         << c_.metric << " -> " << dir_.string() << "\n"
         << std::flush;
    const int code = loop();
    if (code != 0) return code;
    finish_outputs();
    return 0;
  }

 private:
  // ---- state on disk (sweep_store.h) -------------------------------------------------------
  void journal(const nlohmann::json& j) { store_.journal(j); }

  // Rebuilds the scheduler's state from journal.jsonl, sweep.jsonl and the trials' metrics.
  void restore() {
    try {
      restore_records();
    } catch (const nlohmann::json::exception& e) {  // a record without its fields, or of the wrong type
      throw Error("--resume: " + dir_.string() + " holds a malformed journal.jsonl or sweep.jsonl record: " +
                      printable(e.what()),
                  "that sweep cannot be continued; start a new one in another --output-dir");
    }
  }

  void restore_records() {
    for (const auto& e : store_.journal_events()) {
      const int64_t id = e.at("trial").get<int64_t>();
      const std::string ev = e.at("event").get<std::string>();
      Trial& t = trials_[id];
      t.id = id;
      if (ev == "start") {
        t.params = e.at("params");
        t.rung = e.value("rung", int64_t{0});
        t.epochs = e.value("epochs", int64_t{-1});
        t.paused = false;
        if (asha_ && t.rung > 0) asha_->mark_promoted(id, t.rung);
        next_index_ = std::max(next_index_, id + 1);
      } else if (ev == "rung" && asha_) {
        asha_->report(id, e.at("rung").get<int64_t>(), e.at("value").get<double>());
        t.paused = true;
      } else if (ev == "seconds") {
        t.seconds = e.at("seconds").get<double>();
      }
    }
    for (const auto& r : store_.records()) {
      const int64_t id = r.at("trial").get<int64_t>();
      trials_[id].finished = true;
      trials_[id].seconds = r.value("seconds", 0.0);
      finished_order_.push_back(id);
      records_[id] = r;
    }
    for (auto& [id, t] : trials_) {
      read_new_metrics(t);
      if (!t.finished && !t.paused) pending_restart_.push_back(id);
    }
    int64_t done = static_cast<int64_t>(finished_order_.size());
    out_ << "ctrain-sweep: resuming " << dir_.string() << ": " << done << " finished, " << pending_restart_.size()
         << " to continue from their checkpoints, " << (max_trials_ - next_index_) << " still to start\n";
  }

  // ---- trials ------------------------------------------------------------------------------
  void read_new_metrics(Trial& t) {
    read_metrics(t, trial_dir(t.id) / "metrics.jsonl", c_.metric, out_, fatal_);
  }

  fs::path trial_dir(int64_t id) const { return store_.trial_dir(id); }

  std::vector<std::string> command(const Trial& t, bool resume) const {
    std::vector<std::string> argv = split_words(c_.program);
    argv.insert(argv.end(), c_.args.begin(), c_.args.end());
    for (const Param& p : space_) {
      argv.push_back("--" + p.name);
      argv.push_back(format_value(t.params.at(p.name)));
    }
    argv.push_back("--output-dir");
    argv.push_back(trial_dir(t.id).string());
    if (t.epochs > 0) {
      argv.push_back("--epochs");
      argv.push_back(std::to_string(t.epochs));
    }
    if (resume) argv.push_back("--resume");
    return argv;
  }

  void spawn(Trial& t, bool resume) {
    start_process(t, trial_dir(t.id), command(t, resume), c_.stop_grace_s + 5);
    ++running_;
  }

  void start_new() {
    const int64_t id = next_index_++;
    Trial& t = trials_[id];
    t.id = id;
    t.params = sampler_->propose(id, observations());
    if (asha_) {
      t.rung = 0;
      t.epochs = asha_->budget(0);
    }
    journal({{"event", "start"}, {"trial", id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
    out_ << "trial " << trial_name(id) << " started: " << json_dump(t.params)
         << (t.epochs > 0 ? " (" + std::to_string(t.epochs) + " epochs)" : "") << "\n" << std::flush;
    spawn(t, false);
  }

  // What the sampler learns from: trials not running that reported the metric, in trial order
  // (so the history does not depend on which finished first), loss = -metric when maximising.
  std::vector<Observation> observations() const {
    std::vector<Observation> obs;
    for (const auto& [id, t] : trials_) {
      if (t.process.running() || t.by_epoch.empty() || !(t.finished || t.paused)) continue;
      const double b = t.best(maximize_);
      obs.push_back({t.params, maximize_ ? -b : b});
    }
    return obs;
  }

  // The policy's decision on the intervals the trial reported since it last looked, each in
  // order (advancing t.evaluated): true at the first that says stop, with t.stop_reason set and
  // the decision printed. Both the poll and the trial's exit ask it, so a stop at the trial's
  // last epoch does not depend on which of them reads that epoch first.
  bool policy_stops(Trial& t) {
    if (c_.policy.name == "none" || asha_) return false;
    if (t.evaluated >= static_cast<int64_t>(t.by_epoch.size())) return false;  // no new interval
    const std::vector<double> mine = t.stream();
    Streams streams;
    for (const auto& [id, o] : trials_) {
      if (id != t.id && !o.by_epoch.empty()) streams[id] = o.stream();
    }
    for (int64_t n = t.evaluated + 1; n <= static_cast<int64_t>(mine.size()); ++n) {
      t.evaluated = n;
      if (!policy_.due(n)) continue;
      streams[t.id] = std::vector<double>(mine.begin(), mine.begin() + n);
      const Decision d = policy_.decide(t.id, streams);
      if (!d.stop) continue;
      t.stop_reason = c_.policy.name + " at interval " + std::to_string(n) + ": " + d.reason;
      // The epoch of interval n, not the last one read: how many lines one poll reads is timing.
      out_ << "trial " << trial_name(t.id) << " stopped at epoch " << std::next(t.by_epoch.begin(), n - 1)->first
           << ": " << d.reason << "\n" << std::flush;
      return true;
    }
    return false;
  }

  void apply_policy(Trial& t) {
    if (!t.stopping && policy_stops(t)) stop(t);
  }

  void stop(Trial& t) {
    if (!t.process.running() || t.stopping) return;
    t.stopping = true;
    t.stop_sent = Clock::now();
    t.process.signal_group(SIGTERM);
  }

  // A trial's process ended with exit code `code` (128 + signal when killed): what it means is
  // classify_exit's decision (schedule.h), made on what is known now.
  void on_exit(Trial& t, int code) {
    --running_;
    t.seconds += std::chrono::duration<double>(Clock::now() - t.started).count();
    journal({{"event", "seconds"}, {"trial", t.id}, {"seconds", t.seconds}});
    read_new_metrics(t);
    if (interrupted_) return;  // the sweep itself is stopping: --resume continues this trial
    ExitFacts f;
    f.code = code;
    f.stopped_by_policy = t.stopping;
    // A trial that wrote its last epoch and exited before the next poll: the policy decides on
    // what it read only now, as the poll would have (then it was stopped as it was finishing).
    // A resumed sweep replays the same decisions: a restored trial's intervals are evaluated
    // afresh, from its whole metrics.jsonl, against the same finished trials.
    f.policy_stops_now = !t.stopping && code == 0 && fatal_.empty() && policy_stops(t);
    f.stop_reason = t.stop_reason;
    f.more_rungs = asha_ && t.rung + 1 < asha_->rungs();
    f.has_metric = !t.by_epoch.empty();
    const fs::path metrics = trial_dir(t.id) / "metrics.jsonl";
    f.no_metric_reason = no_metric_reason(t, printable(metrics.string()), c_.metric);
    f.first_to_end = finished_order_.empty();
    f.last_log_line = code == 0 ? "" : last_line(trial_dir(t.id) / "log.txt");
    for (const Param& p : space_) f.names_a_sampled_flag |= f.last_log_line.find("--" + p.name) != std::string::npos;
    f.metric = c_.metric;
    f.trial = trial_name(t.id);
    f.metrics_file = metrics.string();
    const ExitOutcome o = classify_exit(f);
    using Kind = ExitOutcome::Kind;
    // read_metrics may already have said why the metric is missing (lines without the field,
    // read only now when the trial ended before the next poll): that reason is the more useful.
    if (!o.fatal.empty() && (o.kind != Kind::kNotRecorded || fatal_.empty())) fatal_ = o.fatal;
    switch (o.kind) {
      case Kind::kCompleted: return record(t, "completed", "", code);
      case Kind::kFailed: return record(t, "failed", o.reason, code);
      case Kind::kEarlyTerminated: return record(t, "early_terminated", o.reason, code);
      case Kind::kNotRecorded: return;
      case Kind::kPausedAtRung: return pause_at_rung(t);
    }
  }

  // ASHA: its value at the rung is the metric of the last epoch it trained.
  void pause_at_rung(Trial& t) {
    const double v = t.by_epoch.rbegin()->second;
    asha_->report(t.id, t.rung, v);
    t.paused = true;
    journal({{"event", "rung"}, {"trial", t.id}, {"rung", t.rung}, {"value", v}});
    out_ << "trial " << trial_name(t.id) << " paused at rung " << t.rung << " (" << t.epochs << " epochs): "
         << c_.metric << " " << format_metric(v) << "\n" << std::flush;
  }

  void record(Trial& t, const std::string& status, const std::string& reason, int code) {
    t.finished = true;
    t.paused = false;
    nlohmann::json r = {{"trial", t.id},
                        {"params", t.params},
                        {"status", status},
                        {"best_metric", t.by_epoch.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.best(maximize_))},
                        {"epochs_run", static_cast<int64_t>(t.by_epoch.size())},
                        {"seconds", std::round(t.seconds * 1000) / 1000},
                        {"exit_code", code}};
    if (!reason.empty()) r["reason"] = reason;
    records_[t.id] = r;
    finished_order_.push_back(t.id);
    store_.append_record(r);
    if (const auto b = best_trial()) store_.write_best(records_.at(*b));
    if (status != "early_terminated") {
      out_ << "trial " << trial_name(t.id) << " " << status
           << (t.by_epoch.empty() ? "" : ": best " + c_.metric + " " + format_metric(t.best(maximize_))) << " after "
           << t.by_epoch.size() << " epochs" << (reason.empty() ? "" : " (" + reason + ")") << "\n";
    }
    progress(true);
  }

  std::optional<int64_t> best_trial() const { return best_record(records_, maximize_); }

  void progress(bool force) {
    const auto now = Clock::now();
    if (!force && now - last_progress_ < std::chrono::seconds(10)) return;
    last_progress_ = now;
    out_ << progress_line(std::chrono::duration<double>(now - t0_).count(), records_, max_trials_, running_, trials_,
                          c_.metric, maximize_)
         << "\n" << std::flush;
  }

  // Reaps every trial whose process ended (each by its own pid); whether any had.
  bool reap() {
    bool any = false;
    for (auto& [id, t] : trials_) {
      if (!t.process.running()) continue;
      if (const auto code = t.process.poll()) {
        on_exit(t, *code);
        any = true;
      }
    }
    return any;
  }

  // ---- the loop ----------------------------------------------------------------------------
  int loop() {
    for (;;) {
      reap();
      for (auto& [id, t] : trials_) {
        if (!t.process.running()) continue;
        read_new_metrics(t);
        if (!fatal_.empty()) break;
        apply_policy(t);
        if (t.stopping && !t.killed && Clock::now() - t.stop_sent > std::chrono::duration<double>(c_.stop_grace_s)) {
          out_ << "trial " << trial_name(id) << " did not stop within " << c_.stop_grace_s << " s: SIGKILL\n";
          t.process.signal_group(SIGKILL);
          t.killed = true;
        }
      }
      if (!fatal_.empty() || stop_signal() != 0) return shut_down();
      fill_slots();
      if (running_ == 0) break;
      progress(false);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    // ASHA: trials left at a lower rung were stopped early by the schedule.
    if (asha_) {
      for (int64_t id : asha_->paused()) {
        Trial& t = trials_.at(id);
        if (!t.finished) record(t, "early_terminated", asha_->paused_reason(id), 0);
      }
    }
    return 0;
  }

  // Starts what fills the free slots, as fill_slot (schedule.h) orders them.
  void fill_slots() {
    for (;;) {
      const bool restart = !pending_restart_.empty();
      std::optional<Asha::Promotion> promotion;  // taken only when it is what fills the slot
      if (!restart && running_ < c_.max_concurrent && asha_) promotion = asha_->promote();
      switch (fill_slot(running_, c_.max_concurrent, restart, promotion.has_value(), next_index_, max_trials_)) {
        case SlotFill::kRestart: {
          Trial& t = trials_.at(pending_restart_.front());
          pending_restart_.erase(pending_restart_.begin());
          out_ << "trial " << trial_name(t.id) << " continues from its checkpoint\n";
          journal({{"event", "start"}, {"trial", t.id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
          spawn(t, true);
          break;
        }
        case SlotFill::kPromotion: {
          Trial& t = trials_.at(promotion->trial);
          t.rung = promotion->rung;
          t.epochs = asha_->budget(promotion->rung);
          journal({{"event", "start"}, {"trial", t.id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
          out_ << "trial " << trial_name(t.id) << " promoted: " << promotion->reason << "\n" << std::flush;
          spawn(t, true);
          break;
        }
        case SlotFill::kNewTrial:
          start_new();
          break;
        case SlotFill::kNothing:
          return;
      }
    }
  }

  // Stops every running trial (SIGTERM, SIGKILL after the grace) and returns the exit code.
  int shut_down() {
    interrupted_ = true;
    for (auto& [id, t] : trials_) {
      t.process.signal_group(SIGTERM);
    }
    const auto t_stop = Clock::now();
    bool killed = false;
    while (running_ > 0) {
      if (reap()) continue;
      if (!killed && Clock::now() - t_stop > std::chrono::duration<double>(c_.stop_grace_s)) {
        for (auto& [id, t] : trials_) {
          t.process.signal_group(SIGKILL);
        }
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!fatal_.empty()) {
      out_ << std::flush;
      throw ConfigError(fatal_, "the trials' logs are in " + (dir_ / "trials").string() + "/NNN/log.txt");
    }
    out_ << "ctrain-sweep: stopped by signal " << stop_signal() << "; continue with --resume --output-dir "
         << dir_.string() << "\n";
    return 128 + stop_signal();
  }

  void finish_outputs() {
    write_final_table(out_, finished_order_, records_, c_.metric, maximize_, (dir_ / "best.json").string());
    try {
      out_ << "report: " << tracking::write_sweep_report(dir_.string(), c_.metric, c_.goal) << "\n";
    } catch (const std::exception& e) {
      out_ << "ctrain-sweep: warning: no report.html: " << e.what() << "\n";
    }
    out_ << std::flush;
  }

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

}  // namespace

int run_sweep(const SweepConfig& cfg, bool resume, std::ostream& out) {
  Sweep s(cfg, out);
  return s.run(resume);
}

}  // namespace ctrain::tune
