#include <signal.h>

#include <chrono>
#include <cmath>
#include <iterator>

#include "core/json.h"
#include "tune/schedule.h"
#include "tune/sweep_report.h"
#include "tune/sweep_run.h"

namespace ctrain::tune {

void Sweep::read_new_metrics(Trial& t) {
  read_metrics(t, trial_dir(t.id) / "metrics.jsonl", c_.metric, out_, fatal_);
}

std::vector<std::string> Sweep::command(const Trial& t, bool resume) const {
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

void Sweep::spawn(Trial& t, bool resume) {
  start_process(t, trial_dir(t.id), command(t, resume), c_.stop_grace_s + 5);
  ++running_;
}

void Sweep::start_new() {
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

std::vector<Observation> Sweep::observations() const {
  std::vector<Observation> obs;
  for (const auto& [id, t] : trials_) {
    if (t.process.running() || t.by_epoch.empty() || !(t.finished || t.paused)) continue;
    const double b = t.best(maximize_);
    obs.push_back({t.params, maximize_ ? -b : b});
  }
  return obs;
}

bool Sweep::policy_stops(Trial& t) {
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

void Sweep::apply_policy(Trial& t) {
  if (!t.stopping && policy_stops(t)) stop(t);
}

void Sweep::stop(Trial& t) {
  if (!t.process.running() || t.stopping) return;
  t.stopping = true;
  t.stop_sent = Clock::now();
  t.process.signal_group(SIGTERM);
}

void Sweep::on_exit(Trial& t, int code) {
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

void Sweep::pause_at_rung(Trial& t) {
  const double v = t.by_epoch.rbegin()->second;
  asha_->report(t.id, t.rung, v);
  t.paused = true;
  journal({{"event", "rung"}, {"trial", t.id}, {"rung", t.rung}, {"value", v}});
  out_ << "trial " << trial_name(t.id) << " paused at rung " << t.rung << " (" << t.epochs << " epochs): "
       << c_.metric << " " << format_metric(v) << "\n" << std::flush;
}

void Sweep::record(Trial& t, const std::string& status, const std::string& reason, int code) {
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

void Sweep::progress(bool force) {
  const auto now = Clock::now();
  if (!force && now - last_progress_ < std::chrono::seconds(10)) return;
  last_progress_ = now;
  out_ << progress_line(std::chrono::duration<double>(now - t0_).count(), records_, max_trials_, running_, trials_,
                        c_.metric, maximize_)
       << "\n" << std::flush;
}

bool Sweep::reap() {
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

}  // namespace ctrain::tune
