#pragma once
// The one place that knows how LibTorch 1.13 and 2.x differ for ctrain's distributed code.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

namespace ctrain::distributed::compat {

#if TORCH_VERSION_MAJOR >= 2
// 2.x: ProcessGroupGloo/NCCL are c10d::Backend implementations behind a ProcessGroup facade.
using BackendBase = c10d::Backend;
#else
// 1.13: ProcessGroupGloo/NCCL derive from c10d::ProcessGroup directly.
using BackendBase = c10d::ProcessGroup;
#endif

}  // namespace ctrain::distributed::compat
