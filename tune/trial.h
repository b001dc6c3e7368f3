#pragma once
// One trial as the sweep tracks it, and what the sweep reads of it: the metric its trainer
// appends to metrics.jsonl (a program from outside: every line is checked), its log's last line.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <ios>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/process.h"

namespace ctrain::tune {

using Clock = std::chrono::steady_clock;

struct Trial {
  int64_t id = 0;
  nlohmann::json params;
  int64_t rung = 0;             // ASHA: the rung being trained (0 otherwise)
  int64_t epochs = -1;          // --epochs passed (ASHA), -1: the program's own
  std::map<int64_t, double> by_epoch;  // metric per epoch (a re-run epoch overwrites)
  std::streamoff read_offset = 0;
  int64_t lines_read = 0;       // metrics.jsonl lines read so far, for messages
  int64_t bad_lines = 0;        // lines skipped: not a JSON object, no integer epoch, a non-number metric
  int64_t non_finite = 0;       // lines whose metric was NaN or infinite (not recorded)
  Process process;              // its process, while running
  Clock::time_point started{};
  double seconds = 0;           // wall time over all its runs
  bool stopping = false;        // SIGTERM sent by the policy
  Clock::time_point stop_sent{};
  bool killed = false;
  std::string stop_reason;
  int64_t evaluated = 0;        // intervals the policy has looked at
  bool finished = false;
  bool paused = false;          // ASHA: finished a rung, waiting for promotion

  // The metric in epoch order.
  std::vector<double> stream() const;
  // Its best value so far (by_epoch must not be empty).
  double best(bool maximize) const;
};

std::string trial_name(int64_t id);      // "007"
std::string format_metric(double v);     // "0.9123"
std::vector<std::string> split_words(const std::string& s);

// Reads the complete lines appended to the trial's metrics.jsonl (`file`) since the last read.
// A line that is not a JSON object, has an epoch that is not an integer or a `metric` that is
// not a number is skipped and reported on `out` naming the trial, the file and the line (the
// first five per trial); a NaN or infinite metric is counted, not recorded. A line without the
// field at all sets `fatal` (--metric names the wrong field) and stops there.
void read_metrics(Trial& t, const std::filesystem::path& file, const std::string& metric, std::ostream& out,
                  std::string& fatal);

// Why a trial that exited 0 has no value of the metric although its metrics.jsonl (`file`) had
// lines; "" when it had none at all.
std::string no_metric_reason(const Trial& t, const std::string& file, const std::string& metric);

// Starts trial `t`'s process, `argv`, in a process group of its own (core/process.h), its
// output appended to DIR/log.txt after a "$ command" line. The child holds an flock on
// DIR/.lock (inherited across exec), so a resumed sweep waits, up to `lock_wait_s`, until no
// process of an earlier run still writes there; it gets SIGTERM when the sweep dies, which a
// launcher forwards to its ranks.
void start_process(Trial& t, const std::filesystem::path& dir, const std::vector<std::string>& argv,
                   double lock_wait_s);

// The last non-empty line of a text file ("" when it has none or cannot be read).
std::string last_line(const std::filesystem::path& p);

}  // namespace ctrain::tune
