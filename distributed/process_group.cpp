#include "distributed/process_group.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>

#include "core/error.h"
#include "distributed/compat.h"

namespace ctrain::distributed {

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<compat::BackendBase> pg;
};

bool nccl_available() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::create(const LaunchInfo& info, std::string backend,
                                                   torch::Device device,
                                                   std::chrono::milliseconds timeout) {
  if (backend.empty()) backend = device.is_cuda() && nccl_available() ? "nccl" : "gloo";
  if (backend == "nccl" && !nccl_available()) {
    throw ConfigError("--dist-backend nccl: this LibTorch was built without NCCL",
                      "use --dist-backend gloo, or build against a CUDA LibTorch");
  }
  if (backend == "nccl" && !device.is_cuda()) {
    throw ConfigError("--dist-backend nccl needs --device cuda (NCCL reduces GPU tensors only)");
  }
  auto impl = std::make_unique<Impl>();
  try {
    if (info.init_method.rfind("file://", 0) == 0) {
      impl->store = c10::make_intrusive<c10d::FileStore>(info.init_method.substr(7), info.world_size);
      impl->store->setTimeout(timeout);
    } else {
      c10d::TCPStoreOptions o;
      o.port = static_cast<uint16_t>(info.master_port);
      o.isServer = info.rank == 0;
      o.numWorkers = info.world_size;
      o.waitWorkers = true;
      o.timeout = timeout;
      impl->store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
    }
  } catch (const std::exception& e) {
    throw Error("rendezvous at " + info.init_method + " failed for rank " +
                    std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                    e.what(),
                "are all ranks started, and is MASTER_ADDR:MASTER_PORT reachable and free?");
  }
  if (backend == "gloo") {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback for single-node jobs, else the interface that resolves the hostname.
    if (info.master_addr == "127.0.0.1" || info.master_addr == "localhost") {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, info.rank,
                                                           info.world_size, opts);
  } else {
#ifdef USE_C10D_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    impl->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, info.rank,
                                                           info.world_size, opts);
#endif
  }
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup(std::move(impl)));
  pg->rank_ = info.rank;
  pg->size_ = info.world_size;
  pg->backend_ = backend;
  pg->timeout_ = timeout;
  return pg;
}

c10::intrusive_ptr<c10d::Work> ProcessGroup::allreduce_async(torch::Tensor& t) {
  std::vector<torch::Tensor> v{t};
  return impl_->pg->allreduce(v);
}

void ProcessGroup::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  try {
    work->wait(timeout_);
  } catch (const std::exception& e) {
    throw Error(what + " failed on rank " + std::to_string(rank_) + " (timeout " +
                    std::to_string(timeout_.count() / 1000) + " s): " + e.what(),
                "a peer rank died or hung; see its log. --dist-timeout sets the limit");
  }
}

void ProcessGroup::allreduce_sum(torch::Tensor& t, const std::string& what) {
  wait(allreduce_async(t), what);
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int root,
                             const std::string& what) {
  c10d::BroadcastOptions o;
  o.rootRank = root;
  wait(impl_->pg->broadcast(tensors, o), what);
}

void ProcessGroup::barrier(const std::string& what) {
  wait(impl_->pg->barrier(), "barrier (" + what + ")");
}

}  // namespace ctrain::distributed
