#include "distributed/process_group.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ifaddrs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/torch_error.h"
#include "core/torch_compat.h"
#include "distributed/route.h"

namespace ctrain::distributed {
namespace {

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

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
    store.set("ctrain/job", bytes(job));
  } else {
    const std::string theirs = text(store.get("ctrain/job"));
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
    store.set("ctrain/ready/" + std::to_string(info.rank), bytes("1"));
    try {
      store.wait({"ctrain/go"}, timeout);
    } catch (const std::exception&) {
      throw Error(me + ": rank 0 did not see every rank join within " + seconds, hint);
    }
    const std::string go = text(store.get("ctrain/go"));
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
      store.set("ctrain/go", bytes(what));
      throw Error(me + ": " + what, hint);
    }
  }
  store.set("ctrain/go", bytes("go"));
}

// The host's network interface names (getifaddrs), sorted.
std::set<std::string> interface_names() {
  std::set<std::string> names;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return names;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) names.insert(a->ifa_name);
  ::freeifaddrs(list);
  return names;
}

// Gloo's devices: GLOO_SOCKET_IFNAME's interfaces (comma-separated, as PyTorch reads it), else
// loopback for a single-node job, else the local address of the route to MASTER_ADDR (where
// the other nodes reach this one; see route.h for why not Gloo's default). `chosen` says how
// an automatic choice was made, for the one line each node prints.
std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices(const LaunchInfo& info, std::string& chosen) {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  const char* env = std::getenv("GLOO_SOCKET_IFNAME");
  if (env != nullptr && *env != '\0') {
    const auto have = interface_names();
    std::stringstream in(env);
    for (std::string name; std::getline(in, name, ',');) {
      if (have.count(name) == 0) {
        std::string list;
        for (const auto& n : have) list += (list.empty() ? "" : ", ") + n;
        throw ConfigError("GLOO_SOCKET_IFNAME names '" + name + "', which is not a network interface of this host",
                          "this host has: " + list);
      }
      try {
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      } catch (const std::exception& e) {
        throw ConfigError("GLOO_SOCKET_IFNAME interface '" + name + "' cannot be used: " + message_of(e),
                          "does it have an IPv4/IPv6 address? (ip addr show " + name + ")");
      }
    }
    if (devices.empty()) throw ConfigError("GLOO_SOCKET_IFNAME='" + std::string(env) + "' names no interface");
  } else if (info.master_addr == "127.0.0.1" || info.master_addr == "localhost") {
    devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    std::optional<LocalRoute> route = route_to(info.master_addr, info.master_port);
    const bool multi_node = info.world_size > info.local_world_size;
    if (route && route->loopback && multi_node) {
      // MASTER_ADDR resolves to this host's loopback (its own name in /etc/hosts on node 0),
      // yet other nodes must reach it: an external interface instead, said so.
      const auto external = first_external_interface();
      if (external) {
        chosen = "MASTER_ADDR " + info.master_addr + " is this host's loopback (" + route->address +
                 "); using the first external interface";
        route = external;
      }
    } else if (route) {
      chosen = "the route to MASTER_ADDR " + info.master_addr;
    }
    if (route) {
      try {
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(route->address));
        chosen = "gloo over " + (route->interface.empty() ? std::string("?") : route->interface) + " (" +
                 route->address + "): " + chosen + "; set GLOO_SOCKET_IFNAME to choose another";
      } catch (const std::exception& e) {
        throw ConfigError("Gloo cannot use " + route->address + " (" + route->interface + ", " + chosen +
                              "): " + message_of(e),
                          "set GLOO_SOCKET_IFNAME to the interface the other nodes reach this one on");
      }
    } else {
      // MASTER_ADDR does not resolve here: the rendezvous will say so, naming it.
      devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
  }
  return devices;
}

// Gloo waits up to five times its timeout for each pair's first connection (gloo's
// tcp::Pair::waitUntil: "use a longer timeout when waiting for initial connect"): a rank whose
// peer died after the rendezvous sat 25 minutes in Pair::connect under the default 300 s. So the
// group is built with a sixth of --dist-timeout, which bounds the address exchange (one
// timeout) plus the connections (five), and raised to the full timeout once connected, for the
// collectives: what LibTorch 2.x's ProcessGroupGloo::setTimeout does, which 1.13 lacks.
class GlooBoundedConnect : public c10d::ProcessGroupGloo {
 public:
  GlooBoundedConnect(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                     c10::intrusive_ptr<Options> options, std::chrono::milliseconds full)
      : c10d::ProcessGroupGloo(store, rank, size, std::move(options)) {
    options_->timeout = full;
    for (auto& context : contexts_) context->setTimeout(full);
  }
};

std::chrono::milliseconds connect_timeout(std::chrono::milliseconds full) {
  return std::max(std::chrono::milliseconds(1000), full / 6);
}

// "192.168.1.5" out of a Gloo device's "tcp, pci=..., iface=eth0, speed=..., addr=[192.168.1.5]".
std::string device_address(const std::string& device) {
  const auto at = device.find("addr=[");
  if (at == std::string::npos) return "";
  const auto end = device.find(']', at);
  return end == std::string::npos ? "" : device.substr(at + 6, end - at - 6);
}

std::string host_name() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return host;
}

// Each rank's host and Gloo address, published before Gloo connects, so that a failed
// connection can name the rank behind the address in Gloo's message.
void publish_address(c10d::Store& store, int rank, const std::string& address) {
  store.set("ctrain/gloo/" + std::to_string(rank), bytes(host_name() + " " + address));
}

// "rank 1 (host node1, 10.0.0.2)" for the peers whose address `message` names as "[address]";
// in a two-rank job, the other rank whatever the message says.
std::string peers_named_in(c10d::Store& store, const LaunchInfo& info, const std::string& message) {
  std::string named;
  for (int r = 0; r < info.world_size; ++r) {
    const std::string key = "ctrain/gloo/" + std::to_string(r);
    if (r == info.rank || !store.check({key})) continue;
    const std::string value = text(store.get(key));
    const auto space = value.rfind(' ');
    const std::string address = value.substr(space + 1);
    const bool named_there = !address.empty() && message.find("[" + address + "]") != std::string::npos;
    if (!named_there && info.world_size != 2) continue;
    named += (named.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " (host " +
             value.substr(0, space) + ", " + address + ")";
  }
  return named;
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

std::vector<std::string> apply_nccl_error_handling_env() {
  // A user's own choice of either mode, under either name, is left alone.
  for (const char* v : {"TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                        "NCCL_ASYNC_ERROR_HANDLING"}) {
    if (std::getenv(v) != nullptr) return {};
  }
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
  try {
    if (info.init_method.rfind("file://", 0) == 0) {
      impl->store = c10::make_intrusive<c10d::FileStore>(info.init_method.substr(7), info.world_size);
      impl->store->setTimeout(timeout);
    } else {
      c10d::TCPStoreOptions o;
      o.port = static_cast<uint16_t>(info.master_port);
      o.isServer = info.rank == 0;
      o.numWorkers = info.world_size;
      // handshake() waits for the ranks instead, after publishing the job, so a peer of
      // another job hears why it is refused rather than timing out.
      o.waitWorkers = false;
      o.timeout = timeout;
      impl->store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
    }
  } catch (const std::exception& e) {
    throw Error("rendezvous at " + info.init_method + " failed for rank " +
                    std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                    message_of(e),
                "are all ranks started, and is MASTER_ADDR:MASTER_PORT reachable and free?");
  }
  try {
    handshake(*impl->store, info, info.init_method.rfind("tcp://", 0) == 0, timeout);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("rendezvous at " + info.init_method + " failed for rank " +
                    std::to_string(info.rank) + " of " + std::to_string(info.world_size) + ": " +
                    message_of(e),
                "did rank 0 start, and is MASTER_ADDR:MASTER_PORT reachable?");
  }
  std::string transport = backend;
  if (backend == "gloo") {
    auto opts = c10d::ProcessGroupGloo::Options::create(connect_timeout(timeout));
    opts->devices = devices;
    transport = "gloo over";
    for (const auto& d : opts->devices) transport += " [" + d->str() + "]";
    publish_address(*impl->store, info.rank, device_address(devices.front()->str()));
    try {
      impl->pg = c10::make_intrusive<GlooBoundedConnect>(impl->store, info.rank, info.world_size, opts, timeout);
    } catch (const std::exception& e) {
      const std::string message = message_of(e);
      std::string peers;
      try {
        peers = peers_named_in(*impl->store, info, message);
      } catch (const std::exception&) {  // the store went with rank 0: the message alone, then
      }
      throw Error("rank " + std::to_string(info.rank) + " (host " + host_name() + ") could not connect to " +
                      (peers.empty() ? std::string("its Gloo peers") : peers) + " over Gloo: " + message,
                  "did that rank die, or does its address reach this host? Its log says; set "
                  "GLOO_SOCKET_IFNAME on each node to the interface the others reach it on. "
                  "--dist-timeout (" + std::to_string(timeout.count() / 1000) + " s) bounds the wait");
    }
  } else {
#ifdef USE_C10D_NCCL
    for (const auto& v : apply_nccl_error_handling_env()) transport += (transport == backend ? " (" : ", ") + v;
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
    throw Error(what + " failed on rank " + std::to_string(rank_) + " (timeout " +
                    std::to_string(timeout_.count() / 1000) + " s): " + message_of(e),
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
