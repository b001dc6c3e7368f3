#pragma once
// Gloo's side of a process group: the network devices it uses (found from the route to
// MASTER_ADDR unless GLOO_SOCKET_IFNAME names them) and its connections, with every wait bounded
// by --dist-timeout and a failed connection naming the rank at the other end.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "distributed/launch.h"

namespace ctrain::distributed {

using GlooDevices = std::vector<std::shared_ptr<::gloo::transport::Device>>;

// GLOO_SOCKET_IFNAME's interfaces (comma-separated, as PyTorch reads it), else loopback for a
// single-node job, else the local address of the route to MASTER_ADDR. `chosen` says how an
// automatic choice was made, for the one line each node prints ("" when none was made).
// Throws ConfigError for an interface this host does not have.
GlooDevices gloo_devices(const LaunchInfo& info, std::string& chosen);

// The Gloo backend over `store` (after the rendezvous), connected to every other rank within
// `timeout`. Throws ctrain::Error naming the rank, host and address it could not connect to.
c10::intrusive_ptr<c10d::ProcessGroupGloo> connect_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                        const LaunchInfo& info, const GlooDevices& devices,
                                                        std::chrono::milliseconds timeout);

// This host's name (gethostname), for messages.
std::string host_name();

// A c10d::Store holds values as bytes; ctrain's keys hold text.
inline std::vector<uint8_t> store_bytes(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string store_text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

// The ranks' table, on the store after the rendezvous, so that an error can name the rank, host
// and address behind a failure ("rank 1 (host node1, 10.0.0.2)"). `address` is the one the
// peers connect to ("" where the backend does not say, as NCCL).
void publish_host(c10d::Store& store, int rank, const std::string& address);
// "rank 1 (host node1, 10.0.0.2)", or "rank 1" when it did not publish.
std::string describe_rank(c10d::Store& store, int rank);
// The ranks other than `self` whose address `message` names as "[address]" (Gloo's way),
// described; with `the_other_of_two`, a two-rank job's other rank whatever the message says.
std::string ranks_named_in(c10d::Store& store, int self, int world_size, const std::string& message,
                           bool the_other_of_two);

}  // namespace ctrain::distributed
