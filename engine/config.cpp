#include "engine/config.h"

#include <cmath>
#include <sstream>
#include <string>

#include "core/error.h"

namespace ctrain::engine {

Amp parse_amp(const std::string& name) {
  for (const auto& c : kAmpChoices) {
    if (name == c.name) return c.value;
  }
  throw ConfigError("--amp must be " + choice_list(kAmpChoices) + ", got '" + name + "'");
}

void TrainConfig::validate() const {
  auto text = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  // Finite as well: CLI11 reads "nan" and "inf" as doubles.
  auto positive = [&](double v, const char* flag) {
    if (!(v > 0 && std::isfinite(v))) throw ConfigError(std::string(flag) + " must be a positive number, got " + text(v));
  };
  positive(static_cast<double>(epochs), "--epochs");
  positive(optim.learning_rate, "--learning-rate");
  if (!(optim.momentum >= 0 && optim.momentum < 1)) {
    throw ConfigError("--momentum must be in [0, 1), got " + text(optim.momentum));
  }
  if (optim.lr_step_size < 0) throw ConfigError("--step-size must be >= 0 (0: no decay)");
  positive(optim.lr_gamma, "--gamma");
  if (threads < 0) throw ConfigError("--threads must be >= 0 (0 = LibTorch default)");
  if (checkpoint.every < 0) throw ConfigError("--checkpoint-every must be >= 0");
  if (checkpoint.keep < 0) throw ConfigError("--keep-checkpoints must be >= 0 (0 = keep all)");
  if (log_interval < 0) throw ConfigError("--log-interval must be >= 0");
  if (device != "auto" && device != "cpu" && device != "cuda" && device.rfind("cuda:", 0) != 0) {
    throw ConfigError("--device must be auto, cpu, cuda or cuda:N, got '" + device + "'");
  }
  if (output_dir.empty()) throw ConfigError("--output-dir must not be empty");
  positive(dist.timeout_s, "--dist-timeout");
  positive(dist.bucket_mb, "--bucket-mb");
  if (dist.accumulate < 1) throw ConfigError("--accumulate must be >= 1");
  if (checkpoint.resume && !checkpoint.resume_from.empty()) {
    throw ConfigError("--resume and --resume-from are exclusive: pick one");
  }
}

nlohmann::json TrainConfig::to_json() const {
  return {{"epochs", epochs},
          {"seed", seed},
          {"device", device},
          {"threads", threads},
          {"output_dir", output_dir},
          {"keep_best", keep_best},
          {"on_nan", on_nan_name(on_nan)},
          {"amp", amp_name(amp)},
          {"channels_last", channels_last},
          {"cuda_graph", cuda_graph},
          {"optimizer", optimizer_name(optim.optimizer)},
          {"learning_rate", optim.learning_rate},
          {"momentum", optim.momentum},
          {"weight_decay", optim.weight_decay},
          {"lr_step_size", optim.lr_step_size},
          {"lr_gamma", optim.lr_gamma},
          {"checkpoint_every", checkpoint.every},
          {"accumulate", dist.accumulate},
          {"bucket_mb", dist.bucket_mb},
          {"keep_checkpoints", checkpoint.keep}};
}

}  // namespace ctrain::engine
