#pragma once
// What the sweep says about its finished trials: which is best, and the final table.
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::tune {

struct Trial;

// The finished trial (a sweep.jsonl record, by trial id) with the best best_metric; none when
// no record has a number there.
std::optional<int64_t> best_record(const std::map<int64_t, nlohmann::json>& records, bool maximize);

// The progress line: time, finished (stopped early, failed), running, each running trial's
// latest epoch, the best so far.
std::string progress_line(double seconds, const std::map<int64_t, nlohmann::json>& records, int64_t max_trials,
                          int64_t running, const std::map<int64_t, Trial>& trials, const std::string& metric,
                          bool maximize);

// The table of the finished trials, best first (those without a metric last, in trial order),
// then the best trial's line naming `best_json`.
void write_final_table(std::ostream& out, const std::vector<int64_t>& finished,
                       const std::map<int64_t, nlohmann::json>& records, const std::string& metric, bool maximize,
                       const std::string& best_json);

}  // namespace ctrain::tune
