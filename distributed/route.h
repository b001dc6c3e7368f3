#pragma once
// Which local interface and address a host is reached from, for choosing Gloo's device when
// GLOO_SOCKET_IFNAME is not set. Gloo's default (the address this host's name resolves to) is
// a loopback one on most distributions (127.0.1.1 in Debian's /etc/hosts), so peers on other
// hosts are told to connect to 127.0.1.1 and are refused; the kernel's route to MASTER_ADDR
// names the address the other nodes can reach this one on.
#include <optional>
#include <string>

namespace ctrain::distributed {

struct LocalRoute {
  std::string interface;  // "eth0"; "" when no interface holds the address
  std::string address;    // numeric, "10.0.0.2" or "fd00::2"
  bool loopback = false;
};

// The source address the kernel would use for packets to host:port, and the interface that
// holds it (a connect()ed UDP socket: nothing is sent). nullopt when host does not resolve or
// has no route.
std::optional<LocalRoute> route_to(const std::string& host, int port);

// The first interface that is up, not loopback, and has an IPv4 (else IPv6) address, in
// getifaddrs order; nullopt when there is none.
std::optional<LocalRoute> first_external_interface();

}  // namespace ctrain::distributed
