#include "engine/runtime.h"

#include <chrono>

#include "core/error.h"

namespace ctrain::engine {

Runtime init_runtime(const TrainConfig& cfg, const distributed::DistFlags& flags,
                     const distributed::EnvLookup& env) {
  Runtime rt;
  rt.launch = distributed::resolve_launch(flags, env);
  if (cfg.threads > 0) torch::set_num_threads(cfg.threads);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  distributed::check_gpus(rt.launch, cfg.device,
                          torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0);
  if (cfg.device == "cpu" || (cfg.device == "auto" && !torch::cuda::is_available())) {
    rt.device = torch::kCPU;
  } else if (!torch::cuda::is_available()) {
    throw ConfigError("--device " + cfg.device + " asked for CUDA, but this LibTorch sees no GPU",
                      "use --device cpu (or auto), or build against a CUDA LibTorch");
  } else if (cfg.device == "cuda" || cfg.device == "auto") {
    // One GPU per local rank, as torchrun users expect.
    rt.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                rt.launch.local_rank % torch::cuda::device_count()));
  } else {
    rt.device = torch::Device(cfg.device);
  }
  if (rt.launch.is_distributed()) {
    rt.pg = distributed::ProcessGroup::create(
        rt.launch, rt.launch.backend, rt.device,
        std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000)));
  }
  return rt;
}

}  // namespace ctrain::engine
