#pragma once
// What ctrain-serve and ctrain-score share: --model as a file or a registry name, --device.
// Header-only, included by one translation unit per app.
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "apps/common/models.h"
#include "core/error.h"
#include "serve/registry.h"

namespace ctrain::apps {

struct ServedModel {
  engine::Model model;
  std::string name;  // "pytorch-birds:3", or the file's path
  std::string path;  // the model.pt loaded
};

// `arg` is a model file when one exists at that path, else NAME[:VERSION|latest] in the
// registry at `registry_dir` (its files' sha256 checked).
inline ServedModel open_served_model(const std::string& arg, const std::string& registry_dir) {
  ServedModel out;
  if (std::filesystem::is_regular_file(arg)) {
    out.name = out.path = arg;
  } else {
    if (arg.find('/') != std::string::npos || !std::filesystem::is_directory(registry_dir)) {
      throw ConfigError("--model " + arg + ": no such file" +
                            (std::filesystem::is_directory(registry_dir) ? "" : ", and no registry at " + registry_dir),
                        "pass a model.pt a trainer wrote, or NAME[:VERSION] registered with ctrain-registry "
                        "(--registry DIR)");
    }
    const serve::ModelVersion v = serve::Registry(registry_dir).resolve(serve::parse_model_ref(arg));
    out.name = v.name + ":" + std::to_string(v.version);
    out.path = v.model_path();
  }
  out.model = load_model(out.path);
  return out;
}

// "cpu" or "cuda[:N]"; CUDA must be there when asked for (never a quiet CPU run).
inline torch::Device parse_serving_device(const std::string& text) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(text);
  } catch (const std::exception&) {
    throw ConfigError("--device " + text + ": not a device", "use cpu or cuda[:N]");
  }
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw ConfigError("--device " + text + ": this LibTorch sees no CUDA device", "use --device cpu");
  }
  if (device.is_cuda() && device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
    throw ConfigError("--device " + text + ": only " + std::to_string(torch::cuda::device_count()) + " CUDA devices");
  }
  if (!device.is_cpu() && !device.is_cuda()) throw ConfigError("--device " + text + ": use cpu or cuda[:N]");
  return device;
}

}  // namespace ctrain::apps
