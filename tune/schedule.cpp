#include "tune/schedule.h"

namespace ctrain::tune {

ExitOutcome classify_exit(const ExitFacts& f) {
  using Kind = ExitOutcome::Kind;
  if (f.stopped_by_policy || f.policy_stops_now) return {Kind::kEarlyTerminated, f.stop_reason, ""};
  if (f.code == 0 && f.more_rungs) {
    if (!f.has_metric) {
      return {Kind::kFailed,
              f.no_metric_reason.empty() ? "exit code 0 but no " + f.metric + " in its metrics.jsonl" : f.no_metric_reason,
              ""};
    }
    return {Kind::kPausedAtRung, "", ""};
  }
  if (f.code == 0) {
    if (f.has_metric) return {Kind::kCompleted, "", ""};
    // NaN values or malformed lines are this trial's failure; no line at all, every trial's.
    if (!f.no_metric_reason.empty()) return {Kind::kFailed, f.no_metric_reason, ""};
    return {Kind::kNotRecorded, "",
            "--metric " + f.metric + ": trial " + f.trial + " finished without writing " + f.metrics_file};
  }
  ExitOutcome o{Kind::kFailed, "exit code " + std::to_string(f.code) + ": " + f.last_log_line, ""};
  // The first trial to end refused its arguments. Unless it names a sampled flag (a value this
  // trial drew, such as a negative learning rate), every trial would: stop here.
  if (f.code == 2 && f.first_to_end && !f.names_a_sampled_flag) {
    o.fatal = "trial " + f.trial + " exited 2 (usage): " + f.last_log_line;
  }
  return o;
}

SlotFill fill_slot(int64_t running, int64_t max_concurrent, bool restart_pending, bool promotion_ready,
                   int64_t started, int64_t max_trials) {
  if (running >= max_concurrent) return SlotFill::kNothing;
  if (restart_pending) return SlotFill::kRestart;
  if (promotion_ready) return SlotFill::kPromotion;
  if (started < max_trials) return SlotFill::kNewTrial;
  return SlotFill::kNothing;
}

}  // namespace ctrain::tune
