#include "distributed/gloo.h"

#include <ifaddrs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/torch_error.h"
#include "distributed/route.h"

namespace ctrain::distributed {
namespace {


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
}  // namespace

std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices(const LaunchInfo& info, std::string& chosen) {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  if (!info.gloo_socket_ifname.empty()) {
    const std::string& env = info.gloo_socket_ifname;
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
    if (devices.empty()) throw ConfigError("GLOO_SOCKET_IFNAME='" + env + "' names no interface");
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
namespace {

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

}  // namespace

std::string host_name() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  return host;
}

void publish_host(c10d::Store& store, int rank, const std::string& address) {
  store.set("ctrain/host/" + std::to_string(rank), store_bytes(host_name() + " " + address));
}

namespace {

// "rank 1 (host node1, 10.0.0.2)" from the published `value` ("node1 10.0.0.2").
std::string describe(int rank, const std::string& value) {
  const auto space = value.rfind(' ');
  const std::string host = value.substr(0, space), address = space == std::string::npos ? "" : value.substr(space + 1);
  return "rank " + std::to_string(rank) + " (host " + host + (address.empty() ? "" : ", " + address) + ")";
}

}  // namespace

std::string describe_rank(c10d::Store& store, int rank) {
  const std::string key = "ctrain/host/" + std::to_string(rank);
  if (!store.check({key})) return "rank " + std::to_string(rank);
  return describe(rank, store_text(store.get(key)));
}

std::string ranks_named_in(c10d::Store& store, int self, int world_size, const std::string& message,
                           bool the_other_of_two) {
  std::string named;
  for (int r = 0; r < world_size; ++r) {
    const std::string key = "ctrain/host/" + std::to_string(r);
    if (r == self || !store.check({key})) continue;
    const std::string value = store_text(store.get(key));
    const std::string address = value.substr(value.rfind(' ') + 1);
    const bool named_there = !address.empty() && message.find("[" + address + "]") != std::string::npos;
    if (!named_there && !(the_other_of_two && world_size == 2)) continue;
    named += (named.empty() ? "" : ", ") + describe(r, value);
  }
  return named;
}

c10::intrusive_ptr<c10d::ProcessGroupGloo> connect_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                        const LaunchInfo& info, const GlooDevices& devices,
                                                        std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create(connect_timeout(timeout));
  opts->devices = devices;
  publish_host(*store, info.rank, device_address(devices.front()->str()));
  try {
    return c10::make_intrusive<GlooBoundedConnect>(store, info.rank, info.world_size, opts, timeout);
  } catch (const std::exception& e) {
    const std::string message = message_of(e);
    std::string peers;
    try {
      peers = ranks_named_in(*store, info.rank, info.world_size, message, /*the_other_of_two=*/true);
    } catch (const std::exception&) {  // the store went with rank 0: the message alone, then
    }
    throw Error("rank " + std::to_string(info.rank) + " (host " + host_name() + ") could not connect to " +
                    (peers.empty() ? std::string("its Gloo peers") : peers) + " over Gloo: " + message,
                "did that rank die, or does its address reach this host? Its log says; set "
                "GLOO_SOCKET_IFNAME on each node to the interface the others reach it on. "
                "--dist-timeout (" + std::to_string(timeout.count() / 1000) + " s) bounds the wait");
  }
}

}  // namespace ctrain::distributed
