#include <cmath>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/process.h"
#include "tune/sampler.h"
#include "tune/sweep.h"
#include "tune/trial.h"

namespace ctrain::tune {

void SweepConfig::validate(const std::string& search_path) const {
  const auto words = split_words(program);
  if (words.empty()) throw ConfigError("--program is required: the trainer to run per trial (build/bin/ctrain-mnist)");
  if (!executable_on(words[0], search_path)) {
    throw ConfigError("--program " + words[0] + ": not found or not executable", "give a path such as build/bin/ctrain-mnist");
  }
  if (goal != "maximize" && goal != "minimize") throw ConfigError("--goal must be maximize or minimize, got '" + goal + "'");
  if (metric.empty()) throw ConfigError("--metric must not be empty");
  if (max_trials < 1) throw ConfigError("--max-trials must be at least 1");
  if (max_concurrent < 1) throw ConfigError("--max-concurrent must be at least 1");
  if (!(stop_grace_s > 0) || !std::isfinite(stop_grace_s)) throw ConfigError("--stop-grace must be a positive number of seconds");
  if (output_dir.empty()) throw ConfigError("--output-dir must not be empty");
  if (params.empty()) throw ConfigError("--param is required: at least one NAME=EXPRESSION to search");
  Space space;
  std::set<std::string> names;
  for (const auto& p : params) {
    space.push_back(parse_param(p));
    if (!names.insert(space.back().name).second) throw ConfigError("--param " + space.back().name + " is given twice");
  }
  make_sampler(sampler, space, static_cast<uint64_t>(seed));  // an unknown sampler, a grid over non-choices
  policy.validate();
  // Flags the sweep sets itself must not come from the fixed arguments too.
  for (const auto& a : args) {
    std::string flag = a.substr(0, a.find('='));
    if (flag == "--output-dir" || flag == "--output_dir") {
      throw ConfigError("the arguments after -- set " + flag + ": the sweep gives each trial its own (SWEEP_DIR/trials/NNN)");
    }
    if (policy.name == "asha" && (flag == "--epochs" || flag == "--num-epochs" || flag == "--num_epochs")) {
      throw ConfigError("the arguments after -- set " + flag + ": with --policy asha the sweep sets --epochs per rung",
                        "use --max-epochs for the last rung's epochs");
    }
    for (const auto& n : names) {
      if (flag == "--" + n) throw ConfigError("the arguments after -- set " + flag + ", which --param " + n + " samples");
    }
  }
}

// config.json: every setting but output_dir (a resumed sweep is wherever it is now).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PolicyConfig, name, slack_factor, slack_amount, evaluation_interval,
                                   delay_evaluation, truncation_percentage, grace_period, reduction_factor,
                                   max_epochs)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SweepConfig, program, args, metric, goal, max_trials, max_concurrent, sampler,
                                   seed, params, policy, stop_grace_s)

nlohmann::json SweepConfig::to_json() const { return *this; }

SweepConfig SweepConfig::from_json(const nlohmann::json& j) {
  try {
    return j.get<SweepConfig>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("a sweep's config.json is incomplete or malformed: ") + e.what());
  }
}

}  // namespace ctrain::tune
