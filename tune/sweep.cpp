#include "tune/sweep.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/json.h"
#include "core/stop.h"
#include "tracking/report.h"
#include "tune/schedule.h"
#include "tune/sweep_report.h"
#include "tune/sweep_run.h"

namespace ctrain::tune {

Sweep::Sweep(const SweepConfig& cfg, std::ostream& out)
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

int Sweep::run(bool resume) {
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

void Sweep::restore() {
  try {
    restore_records();
  } catch (const nlohmann::json::exception& e) {  // a record without its fields, or of the wrong type
    throw Error("--resume: " + dir_.string() + " holds a malformed journal.jsonl or sweep.jsonl record: " +
                    printable(e.what()),
                "that sweep cannot be continued; start a new one in another --output-dir");
  }
}

void Sweep::restore_records() {
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

int Sweep::loop() {
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

void Sweep::fill_slots() {
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

int Sweep::shut_down() {
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

void Sweep::finish_outputs() {
  write_final_table(out_, finished_order_, records_, c_.metric, maximize_, (dir_ / "best.json").string());
  try {
    out_ << "report: " << tracking::write_sweep_report(dir_.string(), c_.metric, c_.goal) << "\n";
  } catch (const std::exception& e) {
    out_ << "ctrain-sweep: warning: no report.html: " << e.what() << "\n";
  }
  out_ << std::flush;
}

int run_sweep(const SweepConfig& cfg, bool resume, std::ostream& out) {
  Sweep s(cfg, out);
  return s.run(resume);
}

}  // namespace ctrain::tune
