#pragma once
// The scheduler's decisions as pure functions of what it knows, so they are tested without
// processes (tests/tune): what a trial's end means, and what fills a free slot.
#include <cstdint>
#include <string>

namespace ctrain::tune {

// What the sweep knows when a trial's process has ended.
struct ExitFacts {
  int code = 0;                     // its exit code (128 + signal when killed)
  bool stopped_by_policy = false;   // the policy had sent it SIGTERM
  bool policy_stops_now = false;    // the policy, asked on what was read only now, stops it
  std::string stop_reason;          // the policy's reason, for either
  bool more_rungs = false;          // ASHA, with a higher rung it may be promoted to
  bool has_metric = false;          // it reported at least one finite value of the metric
  std::string no_metric_reason;     // why not, when its lines were all bad ("": it wrote none)
  bool first_to_end = false;        // no trial of the sweep finished before it
  bool names_a_sampled_flag = false;  // its log's last line names a flag the sweep samples
  std::string last_log_line;
  std::string metric, trial, metrics_file;  // for the messages
};

struct ExitOutcome {
  enum class Kind {
    kCompleted,         // a finished trial with its metric
    kFailed,            // a finished trial without one (reason says why)
    kEarlyTerminated,   // stopped by the policy (reason says why)
    kPausedAtRung,      // ASHA: waits at its rung for a promotion
    kNotRecorded,       // nothing recorded: the sweep's settings are wrong (fatal)
  };
  Kind kind = Kind::kCompleted;
  std::string reason;
  // Non-empty: the whole sweep must stop with this message, because every trial would end the
  // same way (--metric never written, the program refusing the fixed arguments).
  std::string fatal;
};

// A trial's end, classified. A policy stop wins; a trial that exited 0 is completed, paused at
// its ASHA rung, or failed when it wrote no usable metric; any other code is a failure, and the
// first trial of the sweep to exit 2 (usage) over a flag the sweep does not sample is fatal.
ExitOutcome classify_exit(const ExitFacts& f);

// What fills a free slot, in this order: an interrupted trial continues from its checkpoint,
// then an ASHA promotion, then a new trial; nothing when no slot is free or none is left.
enum class SlotFill { kNothing, kRestart, kPromotion, kNewTrial };
SlotFill fill_slot(int64_t running, int64_t max_concurrent, bool restart_pending, bool promotion_ready,
                   int64_t started, int64_t max_trials);

}  // namespace ctrain::tune
