#include "distributed/process_group.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/torch_error.h"
#include "core/torch_compat.h"
#include "distributed/gloo.h"

namespace ctrain::distributed {
namespace {


// Rendezvous handshake on ctrain/ keys of the store (Gloo and NCCL use other keys). Rank 0
// publishes the job (world size, run id); every other rank compares it with its own and
// leaves with an error naming both on a mismatch, claims its rank (TCPStore only: a FileStore
// file can outlive a crashed job) and reports ready. Rank 0 waits for every rank to be ready,
// so a missing rank is named rather than left to a backend timeout, then says "go" (or who is
// missing) to the others, who wait for it: so every rank enters the backend within moments of
// the others, and the backend's own connection timeout can be short (see GlooBoundedConnect).
// c10d's TCPStore has no such check of its own.
void handshake(c10d::Store& store, const LaunchInfo& info, bool tcp,
               std::chrono::milliseconds timeout) {
  const std::string job = "world size " + std::to_string(info.world_size) + ", run id '" +
                          (info.run_id.empty() ? "(none)" : info.run_id) + "'";
  const std::string me = "rank " + std::to_string(info.rank) + " of " + info.init_method;
  const std::string seconds = std::to_string(timeout.count() / 1000) + " s";
  const std::string hint = "are all ranks started with " + job + "? --dist-timeout sets the limit";
  if (info.rank == 0) {
    store.set("ctrain/job", store_bytes(job));
  } else {
    const std::string theirs = store_text(store.get("ctrain/job"));
    if (theirs != job) {
      throw Error(me + " has " + job + ", but the job whose rank 0 listens there has " + theirs,
                  "a rank of another job, or a stale process, uses this MASTER_ADDR:MASTER_PORT; "
                  "give each job its own port");
    }
    if (tcp && store.add("ctrain/claim/" + std::to_string(info.rank), 1) > 1) {
      throw Error(me + ": another process of this job already joined as rank " +
                      std::to_string(info.rank),
                  "every process needs its own RANK");
    }
    store.set("ctrain/ready/" + std::to_string(info.rank), store_bytes("1"));
    try {
      store.wait({"ctrain/go"}, timeout);
    } catch (const std::exception&) {
      throw Error(me + ": rank 0 did not see every rank join within " + seconds, hint);
    }
    const std::string go = store_text(store.get("ctrain/go"));
    if (go != "go") throw Error(me + ": " + go, hint);
    return;
  }
  std::vector<std::string> keys;
  for (int r = 1; r < info.world_size; ++r) keys.push_back("ctrain/ready/" + std::to_string(r));
  try {
    store.wait(keys, timeout);
  } catch (const std::exception&) {
    std::string missing;
    for (int r = 1; r < info.world_size; ++r) {
      if (!store.check({keys[static_cast<size_t>(r - 1)]})) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
    }
    if (!missing.empty()) {  // else the last one arrived just as the wait gave up
      const std::string what = "rank(s) " + missing + " did not join within " + seconds;
      store.set("ctrain/go", store_bytes(what));
      throw Error(me + ": " + what, hint);
    }
  }
  store.set("ctrain/go", store_bytes("go"));
}

// The store at info.init_method (TCPStore, served by rank 0, or FileStore), and the handshake
// on it; errors name the init method and the rank.
c10::intrusive_ptr<c10d::Store> rendezvous(const LaunchInfo& info, std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::Store> store;
  try {
    if (info.init_method.rfind("file://", 0) == 0) {
      store = c10::make_intrusive<c10d::FileStore>(info.init_method.substr(7), info.world_size);
      store->setTimeout(timeout);
    } else {
      c10d::TCPStoreOptions o;
      o.port = static_cast<uint16_t>(info.master_port);
      o.isServer = info.rank == 0;
      o.numWorkers = info.world_size;
      // handshake() waits for the ranks instead, after publishing the job, so a peer of
      // another job hears why it is refused rather than timing out.
      o.waitWorkers = false;
      o.timeout = timeout;
      store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
    }
  } catch (const std::exception& e) {
    throw Error("rendezvous at " + info.init_method + " failed for rank " +
                    std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                    message_of(e),
                "are all ranks started, and is MASTER_ADDR:MASTER_PORT reachable and free?");
  }
  try {
    handshake(*store, info, info.init_method.rfind("tcp://", 0) == 0, timeout);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("rendezvous at " + info.init_method + " failed for rank " +
                    std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                    message_of(e),
                "did rank 0 start, and is MASTER_ADDR:MASTER_PORT reachable?");
  }
  return store;
}

}  // namespace

void check_gpus(const LaunchInfo& info, const std::string& device, int gpu_count) {
  if (gpu_count <= 0) return;
  const std::string plural = gpu_count == 1 ? " GPU" : " GPUs";
  int index = -1;
  if (device.rfind("cuda:", 0) == 0) {
    try {
      index = std::stoi(device.substr(5));
    } catch (const std::exception&) {
      throw ConfigError("--device " + device + ": expected cuda:N with N a GPU index");
    }
    if (index < 0 || index >= gpu_count) {
      throw ConfigError("--device " + device + ": this node has " + std::to_string(gpu_count) + plural +
                        " (cuda:0 to cuda:" + std::to_string(gpu_count - 1) + ")");
    }
  }
  const bool cuda = device.rfind("cuda", 0) == 0 || device == "auto";
  const bool nccl = info.backend == "nccl" || (info.backend.empty() && cuda && nccl_available());
  if (!nccl || info.local_world_size <= 1) return;
  const std::string ranks = std::to_string(info.local_world_size) + " ranks on this node";
  if (info.local_world_size > gpu_count) {
    throw ConfigError(ranks + " but " + std::to_string(gpu_count) + plural +
                          ": NCCL needs a GPU per rank; use --dist-backend gloo or --nproc-per-node " +
                          std::to_string(gpu_count));
  }
  if (index >= 0) {
    throw ConfigError(ranks + " all on --device " + device +
                          ": NCCL needs a GPU per rank; use --device cuda (rank r takes cuda:r) or "
                          "--dist-backend gloo");
  }
}

std::vector<std::pair<std::string, std::string>> nccl_error_handling_env() {
  // Blocking wait makes Work::wait(timeout) on the host throw when a collective fails or
  // times out, so ProcessGroup::wait() can name it; without it a dead rank under NCCL shows
  // up as a hang at the next host read. 1.13 reads NCCL_*, 2.x TORCH_NCCL_* (and the old
  // names, with a deprecation warning). Cost: the host waits for each bucket's allreduce
  // itself instead of only ordering the streams.
  return {{compat::nccl_blocking_wait_env(), "1"}};
}

std::vector<std::string> apply_nccl_error_handling_env(const LaunchInfo& info) {
  // A user's own choice of either mode, under either name, is left alone.
  if (!info.nccl_error_mode.empty()) return {};
  std::vector<std::string> set;
  for (const auto& [name, value] : nccl_error_handling_env()) {
    ::setenv(name.c_str(), value.c_str(), /*overwrite=*/0);
    set.push_back(name + "=" + value);
  }
  return set;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<compat::BackendBase> pg;
  std::string init_method;
};

bool nccl_available() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() {
  // Shut the backend down explicitly, on success and on the error path alike (this runs while
  // an exception unwinds through Runtime): LibTorch 2.x's NCCL backend otherwise warns that
  // destroy_process_group() was not called, and may leave its communicators to the exit path.
#if defined(USE_C10D_NCCL) && CTRAIN_TORCH_AT_LEAST(2, 5)
  if (impl_ && impl_->pg) {
    if (auto* nccl = dynamic_cast<c10d::ProcessGroupNCCL*>(impl_->pg.get())) {
      try {
        nccl->shutdown();
      } catch (const std::exception&) {  // a destructor must not throw; the job is ending
      }
    }
  }
#endif
}

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
  // Bad network settings fail on every rank before the rendezvous, not after it.
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  std::string chosen;
  if (backend == "gloo") devices = gloo_devices(info, chosen);
  if (!chosen.empty() && info.local_rank == 0) {
    // Once per node (its first local rank): which interface the others will connect to.
    std::fprintf(stderr, "ctrain: node %s (rank %d): %s\n", host_name().c_str(), info.rank, chosen.c_str());
  }
  auto impl = std::make_unique<Impl>();
  impl->store = rendezvous(info, timeout);
  impl->init_method = info.init_method;
  std::string transport = backend;
  if (backend == "gloo") {
    transport = "gloo over";
    for (const auto& d : devices) transport += " [" + d->str() + "]";
    impl->pg = connect_gloo(impl->store, info, devices, timeout);
  } else {
#ifdef USE_C10D_NCCL
    publish_host(*impl->store, info.rank, "");  // Gloo's connect publishes its own
    for (const auto& v : apply_nccl_error_handling_env(info)) transport += (transport == backend ? " (" : ", ") + v;
    if (transport != backend) transport += ")";
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
  pg->transport_ = transport;
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
    const std::string message = message_of(e);
    throw Error(what + " failed on rank " + std::to_string(rank_) + " (timeout " +
                    std::to_string(timeout_.count() / 1000) + " s): " + message + waited_for(message),
                "a peer rank died or hung; see its log. --dist-timeout sets the limit");
  }
}

namespace {

// How long a rank whose collective failed gives its peers to report failures of their own: they
// entered the collective within moments of each other, so their timeouts end as close together.
constexpr std::chrono::seconds kReportWindow{5};

}  // namespace

std::string ProcessGroup::waited_for(const std::string& message) {
  auto result = std::make_shared<std::promise<std::string>>();
  std::future<std::string> named = result->get_future();
  // On a thread of its own: a hung rank 0 holds the store, and a read of it would wait the whole
  // --dist-timeout again. Detached: a read stuck there must not hold up the error.
  std::thread([result, store = impl_->store, rank = rank_, size = size_, gloo = backend_ == "gloo",
               message, at = impl_->init_method] {
    try {
      store->set("ctrain/failed/" + std::to_string(rank), store_bytes("1"));
      int64_t failed = store->add("ctrain/failed", 1);
      // Gloo names a peer whose connection closed ("Connection closed by peer [10.0.0.6]:...").
      if (const std::string closed = gloo ? ranks_named_in(*store, rank, size, message, false) : "";
          !closed.empty()) {
        result->set_value("; its peer " + closed + " closed the connection (died?)");
        return;
      }
      const auto until = std::chrono::steady_clock::now() + kReportWindow;
      while (failed < size && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        failed = store->add("ctrain/failed", 0);
      }
      std::string silent;
      int count = 0;
      for (int r = 0; r < size && failed < size; ++r) {
        if (r == rank || store->check({"ctrain/failed/" + std::to_string(r)})) continue;
        if (++count <= 8) silent += (silent.empty() ? "" : ", ") + describe_rank(*store, r);
      }
      if (count > 8) silent += " and " + std::to_string(count - 8) + " more";
      result->set_value(silent.empty() ? "" : "; waited for " + silent + ", which reported no failure of its own within " +
                                                  std::to_string(kReportWindow.count()) + " s: dead, hung or cut off");
    } catch (const std::exception&) {
      result->set_value("; the store on rank 0 (" + at + ") no longer answers: rank 0 died or its host is cut off");
    }
  }).detach();
  if (named.wait_for(kReportWindow + std::chrono::seconds(2)) != std::future_status::ready) {
    return "; the store on rank 0 (" + impl_->init_method + ") did not answer within " +
           std::to_string(kReportWindow.count() + 2) + " s: rank 0 hung, or its host is cut off";
  }
  return named.get();
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
