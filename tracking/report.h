#pragma once
// Self-contained HTML pages (no network fetches; charts are inline SVG drawn here) from the
// files a run or a sweep leaves: metrics.jsonl per run, sweep.jsonl per sweep. tracking/ knows
// no trainer: what a page shows comes from those files and a config JSON its caller passes.
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tracking/jsonl.h"  // the files pages are made from

namespace ctrain::tracking {

// One line chart: each series is (x, y) points with a name; drawn as inline SVG.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};
std::string svg_line_chart(const std::string& title, const std::string& x_label,
                           const std::vector<Series>& series, int width = 560, int height = 300);
// A scatter plot of (x, y) points.
std::string svg_scatter(const std::string& title, const std::string& x_label,
                        const std::string& y_label, const std::vector<std::pair<double, double>>& points,
                        int width = 360, int height = 260);

// HTML-escapes text for element content and attribute values; bytes that are not UTF-8 become
// U+FFFD, so any text read from a file can be printed into a page.
std::string html_escape(const std::string& s);

// run_dir/report.html from run_dir/metrics.jsonl: loss and accuracy curves (train and val per
// epoch), seconds per epoch, final and best metrics, `config` as a table, and where the model,
// ONNX and event files are. Written atomically; returns its path.
std::string write_run_report(const std::string& run_dir, const nlohmann::json& config);

// sweep_dir/report.html from sweep_dir/sweep.jsonl (one line per trial: trial, params,
// status, best_metric, epochs_run, seconds) and each trial's trials/NNN/metrics.jsonl: every
// trial's `metric` curve on one chart, a table sorted by the metric (best first for `goal`
// "maximize" or "minimize") with parameters and status (early-terminated trials marked), and
// a scatter of each numeric parameter against the metric. Returns its path.
std::string write_sweep_report(const std::string& sweep_dir, const std::string& metric,
                               const std::string& goal);

}  // namespace ctrain::tracking
