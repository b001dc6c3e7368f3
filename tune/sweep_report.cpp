#include "tune/sweep_report.h"

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "core/json.h"
#include "tune/trial.h"

namespace ctrain::tune {

std::optional<int64_t> best_record(const std::map<int64_t, nlohmann::json>& records, bool maximize) {
  std::optional<int64_t> b;
  for (const auto& [id, r] : records) {
    if (!r["best_metric"].is_number()) continue;
    const double v = r["best_metric"].get<double>();
    if (!b || (maximize ? v > records.at(*b)["best_metric"].get<double>()
                        : v < records.at(*b)["best_metric"].get<double>())) {
      b = id;
    }
  }
  return b;
}

std::string progress_line(double seconds, const std::map<int64_t, nlohmann::json>& records, int64_t max_trials,
                          int64_t running, const std::map<int64_t, Trial>& trials, const std::string& metric,
                          bool maximize) {
  int64_t stopped = 0, failed = 0;
  for (const auto& [id, r] : records) {
    stopped += r["status"] == "early_terminated";
    failed += r["status"] == "failed";
  }
  std::ostringstream line;
  line << "[sweep " << std::fixed << std::setprecision(0) << seconds << "s] " << records.size() << "/" << max_trials
       << " finished (" << stopped << " stopped early, " << failed << " failed), " << running << " running";
  for (const auto& [id, t] : trials) {
    if (t.process.running() && !t.by_epoch.empty()) {
      line << "; trial " << trial_name(id) << " epoch " << t.by_epoch.rbegin()->first << " "
           << format_metric(t.by_epoch.rbegin()->second);
    }
  }
  if (const auto b = best_record(records, maximize)) {
    line << "; best " << metric << " " << format_metric(records.at(*b)["best_metric"].get<double>()) << " (trial "
         << trial_name(*b) << ")";
  }
  return line.str();
}

void write_final_table(std::ostream& out, const std::vector<int64_t>& finished,
                       const std::map<int64_t, nlohmann::json>& records, const std::string& metric, bool maximize,
                       const std::string& best_json) {
  std::vector<int64_t> ids = finished;
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) {
    const auto& x = records.at(a)["best_metric"];
    const auto& y = records.at(b)["best_metric"];
    if (x.is_number() != y.is_number()) return x.is_number();
    if (!x.is_number()) return a < b;
    return maximize ? x.get<double>() > y.get<double>() : x.get<double>() < y.get<double>();
  });
  out << "\n trial  status            " << std::setw(14) << metric << "  epochs  seconds  params\n";
  for (int64_t id : ids) {
    const auto& r = records.at(id);
    out << "   " << trial_name(id) << "  " << std::left << std::setw(16) << r["status"].get<std::string>()
        << std::right << "  " << std::setw(14)
        << (r["best_metric"].is_number() ? format_metric(r["best_metric"].get<double>()) : std::string("-")) << "  "
        << std::setw(6) << r["epochs_run"].get<int64_t>() << "  " << std::setw(7) << std::fixed
        << std::setprecision(1) << r["seconds"].get<double>() << "  " << json_dump(r["params"]) << "\n";
  }
  if (const auto b = best_record(records, maximize)) {
    out << "best: trial " << trial_name(*b) << " " << metric << " "
        << format_metric(records.at(*b)["best_metric"].get<double>()) << " " << json_dump(records.at(*b)["params"])
        << " (" << best_json << ")\n";
  }
}

}  // namespace ctrain::tune
