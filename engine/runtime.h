#pragma once
// Where a process runs: its rank and world (flags and the launcher's environment), its device,
// and the process group when there is more than one process.
#include <torch/torch.h>

#include <memory>

#include "distributed/launch.h"
#include "distributed/process_group.h"
#include "engine/config.h"

namespace ctrain::engine {

// What a process needs to know about where it runs. pg is null for a single process.
struct Runtime {
  torch::Device device = torch::kCPU;
  distributed::LaunchInfo launch;
  std::unique_ptr<distributed::ProcessGroup> pg;
  bool is_rank0() const { return launch.rank == 0; }
};

// Applies --threads and --seed (seeded before the model is built so init is reproducible),
// resolves rank/world size from `flags` and the launch environment, resolves --device (cuda
// picks cuda:<local_rank>; "cuda" without a usable GPU is an error, never a silent CPU run),
// and when world_size > 1 joins the process group.
Runtime init_runtime(const TrainConfig& cfg, const distributed::DistFlags& flags = {},
                     const distributed::EnvLookup& env = distributed::process_env());

}  // namespace ctrain::engine
