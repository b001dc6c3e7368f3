// ctrain-report: writes DIR/report.html for a run directory (metrics.jsonl, model.pt) or a
// sweep directory (sweep.jsonl, trials/NNN/metrics.jsonl). Wiring only: tracking/report.h
// draws the page, engine/ reads the run's configuration from its checkpoint.
//   ctrain-report RUN_DIR
//   ctrain-report SWEEP_DIR [--metric validation_acc] [--goal maximize|minimize]
#include <cstdio>
#include <filesystem>

#include "apps/common/cli.h"
#include "core/fs.h"
#include "core/json.h"
#include "apps/common/models.h"
#include "tracking/report.h"

namespace {

int run(int argc, char** argv) {
  std::string dir, metric = "validation_acc", goal = "maximize";
  CLI::App app{"ctrain-report: an HTML page (report.html) for a run or a sweep directory"};
  app.add_option("dir", dir, "a run directory (metrics.jsonl) or a sweep directory (sweep.jsonl)")->required();
  auto* metric_opt = app.add_option("--metric", metric, "sweeps: the metric charted and sorted by (default: the sweep's)");
  auto* goal_opt = app.add_option("--goal", goal, "sweeps: maximize | minimize (default: the sweep's)");
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;
  namespace fs = std::filesystem;
  // A ctrain-sweep directory says what it optimised in config.json.
  if (const fs::path cfg = fs::path(dir) / "config.json"; fs::exists(cfg)) {
    try {
      const auto j = ctrain::json_parse(ctrain::read_file(cfg.string(), 16 << 20), cfg.string());
      if (metric_opt->count() == 0 && j.is_object() && j.contains("metric") && j["metric"].is_string()) {
        metric = j["metric"].get<std::string>();
      }
      if (goal_opt->count() == 0 && j.is_object() && j.contains("goal") && j["goal"].is_string()) {
        goal = j["goal"].get<std::string>();
      }
    } catch (const ctrain::Error&) {
      // not a sweep's config (or not a readable file): the flags' defaults stand
    }
  }
  if (goal != "maximize" && goal != "minimize") {
    throw ctrain::ConfigError("--goal must be maximize or minimize, got '" + ctrain::printable(goal) + "'");
  }
  if (metric.empty()) throw ctrain::ConfigError("--metric must not be empty");
  std::string path;
  if (fs::exists(fs::path(dir) / "sweep.jsonl")) {
    path = ctrain::tracking::write_sweep_report(dir, metric, goal);
  } else if (fs::exists(fs::path(dir) / "metrics.jsonl")) {
    path = ctrain::tracking::write_run_report(dir, ctrain::apps::run_config(dir));
  } else {
    throw ctrain::Error(dir + " has neither metrics.jsonl (a run) nor sweep.jsonl (a sweep)",
                        "point ctrain-report at a trainer's --output-dir or a sweep's directory");
  }
  std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctrain::apps::guarded_main("ctrain-report", [&] { return run(argc, argv); });
}
