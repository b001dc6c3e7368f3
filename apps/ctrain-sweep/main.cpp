// ctrain-sweep: a hyperparameter search that runs a trainer once per trial and stops poor
// trials early (HyperDrive's expressions and policies, plus TPE and ASHA). Wiring only: flags
// (or a JSON file) -> tune::SweepConfig -> tune::run_sweep().
//   ctrain-sweep --program build/bin/ctrain-mnist --output-dir sweep --metric validation_acc \
//     --max-trials 8 --max-concurrent 2 --policy bandit --slack-factor 0.1 \
//     --param learning-rate='loguniform(-6,-1)' --param batch-size='choice(32,64,128)' \
//     -- --data-folder DATA --epochs 20
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "apps/common/cli.h"
#include "apps/common/main.h"
#include "core/fs.h"
#include "core/json.h"
#include "tune/sweep.h"

namespace {

// --config FILE as JSON: {"program": "...", "param": ["lr=uniform(0.01,0.1)"], "args": [...]}.
// Keys are the long flag names without "--"; flags on the command line win. CLI11 reads
// TOML/INI itself; this adapter gives it JSON, the format the rest of ctrain writes.
class JsonConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App*, bool, bool, std::string) const override { return {}; }
  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    nlohmann::json j;
    try {
      in >> j;
    } catch (const std::exception& e) {
      throw CLI::ConversionError("--config: not valid JSON: " + std::string(e.what()));
    }
    if (!j.is_object()) throw CLI::ConversionError("--config: the JSON must be an object of flag names");
    std::vector<CLI::ConfigItem> items;
    for (auto it = j.begin(); it != j.end(); ++it) {
      CLI::ConfigItem item;
      item.name = it.key();
      auto text = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
      if (it->is_array()) {
        for (const auto& v : *it) item.inputs.push_back(text(v));
      } else if (it->is_object()) {  // "param": {"learning-rate": "loguniform(-6,-1)"}
        for (auto p = it->begin(); p != it->end(); ++p) item.inputs.push_back(p.key() + "=" + text(p.value()));
      } else {
        item.inputs.push_back(text(*it));
      }
      items.push_back(item);
    }
    return items;
  }
};

// --resume: the settings saved in --output-dir's config.json. A requeued job re-runs its
// original command line with --resume appended: settings given equal to the saved ones are
// fine; a differing one is refused, naming it and both values.
ctrain::tune::SweepConfig saved_settings(const ctrain::tune::SweepConfig& c,
                                         const std::vector<CLI::Option*>& settings) {
  namespace fs = std::filesystem;
  const std::string path = (fs::path(c.output_dir) / "config.json").string();
  if (!fs::exists(path)) {
    throw ctrain::ConfigError("--resume: " + path + " does not exist", "is --output-dir a sweep's directory?");
  }
  nlohmann::json j;
  try {
    j = ctrain::json_parse(ctrain::read_file(path, 16 << 20), path);
  } catch (const ctrain::Error& e) {
    throw ctrain::ConfigError(std::string("--resume: ") + e.what());
  }
  const ctrain::tune::SweepConfig saved = ctrain::tune::SweepConfig::from_json(j);
  const nlohmann::json given = c.to_json(), kept = saved.to_json();
  for (const CLI::Option* o : settings) {
    if (o->count() == 0) continue;
    const std::string flag = o->get_name();
    std::string key = flag.rfind("--", 0) == 0 ? flag.substr(2) : flag;
    std::replace(key.begin(), key.end(), '-', '_');
    const std::string ptr = flag == "--policy" ? "/policy/name"
                            : flag == "--param" ? "/params"
                            : flag == "--stop-grace" ? "/stop_grace_s"
                            : kept.contains(key) ? "/" + key
                                                 : "/policy/" + key;
    const nlohmann::json::json_pointer at(ptr);
    if (!kept.contains(at) || given.at(at) != kept.at(at)) {
      throw ctrain::ConfigError("--resume: " + flag + " " + (given.contains(at) ? given.at(at).dump() : "?") +
                                    " differs from the sweep's saved " +
                                    (kept.contains(at) ? kept.at(at).dump() : "(unset)") + " (" + path + ")",
                                "drop " + flag + " to continue the sweep as saved, or start a new one in another "
                                "--output-dir");
    }
  }
  ctrain::tune::SweepConfig out = saved;
  out.output_dir = c.output_dir;
  return out;
}

int run(int argc, char** argv) {
  ctrain::tune::SweepConfig c;
  bool resume = false;
  CLI::App app{"ctrain-sweep: hyperparameter search over a ctrain trainer, with early termination"};
  app.config_formatter(std::make_shared<JsonConfig>());
  app.set_config("--config", "", "a JSON file with the same settings (keys: flag names without --)");
  std::vector<CLI::Option*> settings;
  auto opt = [&](CLI::Option* o) { settings.push_back(o); return o; };
  opt(app.add_option("--program", c.program,
                     "the trainer's command line (words split at spaces; may be a launcher line)"));
  app.add_option("--output-dir,--output_dir", c.output_dir, "where the sweep's files and trials/NNN go")
      ->capture_default_str();
  opt(app.add_option("--metric,--primary-metric-name", c.metric, "the metrics.jsonl field to optimise")
          ->capture_default_str());
  opt(app.add_option("--goal,--primary-metric-goal", c.goal, "maximize | minimize")->capture_default_str());
  opt(app.add_option("--max-trials,--max-total-runs", c.max_trials, "trials to run in all")->capture_default_str());
  opt(app.add_option("--max-concurrent,--max-concurrent-runs", c.max_concurrent, "trials running at once")
          ->capture_default_str());
  opt(app.add_option("--sampler", c.sampler, "random | grid | tpe")->capture_default_str());
  opt(app.add_option("--seed", c.seed, "the sampler's seed")->capture_default_str());
  opt(app.add_option("--param", c.params,
                     "NAME=EXPRESSION, e.g. learning-rate='loguniform(-6,-1)'; passed as --NAME VALUE")
          ->allow_extra_args(false));
  opt(app.add_option("--policy", c.policy.name, "none | bandit | median | truncation | asha")->capture_default_str());
  opt(app.add_option("--slack-factor", c.policy.slack_factor, "bandit: allowed ratio to the best"));
  opt(app.add_option("--slack-amount", c.policy.slack_amount, "bandit: allowed distance to the best"));
  opt(app.add_option("--evaluation-interval", c.policy.evaluation_interval, "evaluate every N reported epochs")
          ->capture_default_str());
  opt(app.add_option("--delay-evaluation", c.policy.delay_evaluation, "first evaluation at interval >= N")
          ->capture_default_str());
  opt(app.add_option("--truncation-percentage", c.policy.truncation_percentage,
                     "truncation: the lowest N% stop at each evaluation"));
  opt(app.add_option("--grace-period", c.policy.grace_period, "asha: epochs of the first rung")->capture_default_str());
  opt(app.add_option("--reduction-factor", c.policy.reduction_factor, "asha: eta")->capture_default_str());
  opt(app.add_option("--max-epochs", c.policy.max_epochs, "asha: epochs of the last rung"));
  opt(app.add_option("--stop-grace", c.stop_grace_s, "seconds between a trial's SIGTERM and SIGKILL")
          ->capture_default_str());
  app.add_flag("--resume", resume, "continue the sweep in --output-dir with its saved settings");
  opt(app.add_option("args", c.args, "arguments after -- passed to every trial"));
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;
  if (resume) c = saved_settings(c, settings);
  const char* path = std::getenv("PATH");  // the trials inherit it; --program is searched on it
  c.validate(path != nullptr ? path : "");
  return ctrain::tune::run_sweep(c, resume, std::cout);
}

}  // namespace

int main(int argc, char** argv) {
  // SIGTERM/SIGINT stop the trials (SIGTERM, then SIGKILL after --stop-grace); a second signal
  // does not cut that short.
  ctrain::StopOptions stop;
  stop.second_kills = false;
  ctrain::install_stop_handlers(stop);
  return ctrain::apps::guarded_main("ctrain-sweep", [&] { return run(argc, argv); });
}
