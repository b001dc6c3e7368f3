#include "distributed/node_agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "core/error.h"
#include "distributed/line_channel.h"

namespace ctrain::distributed {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string errno_text() { return std::strerror(errno); }

std::string fmt_s(double s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

struct NodeAgent::Impl {
  AgentOptions o;
  bool master = false;
  int listen_fd = -1;
  std::vector<Peer> peers;    // node 0: the other nodes' launchers (joined or not yet)
  Peer up;                    // other nodes: the connection to node 0
  Clock::time_point sent = Clock::now();
  bool self_done = false;

  std::string where() const { return o.master_addr + ":" + std::to_string(o.port); }

  std::string name(const Peer& p) const {
    return "node " + std::to_string(p.node) + (p.addr.empty() ? "" : " (" + p.addr + ")");
  }

  void listen_for_nodes() {
    listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) throw Error("ctrain-launch: socket: " + errno_text());
    const int one = 1;
    ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(o.port));
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(listen_fd, 64) != 0) {
      const std::string why = errno_text();
      ::close(listen_fd);
      listen_fd = -1;
      throw Error("ctrain-launch: node 0 cannot listen for the other nodes' launchers on port " +
                      std::to_string(o.port) + ": " + why,
                  "pick a free port with --agent-port (default: --master-port + 1)");
    }
    nonblocking(listen_fd);
  }

  void accept_new() {
    for (;;) {
      sockaddr_in a{};
      socklen_t len = sizeof(a);
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      keepalive(fd);
      Peer p;
      p.fd = fd;
      char ip[INET_ADDRSTRLEN] = {0};
      ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
      p.addr = ip;
      peers.push_back(std::move(p));
    }
  }

  void heartbeat() {
    if (seconds_since(sent) < o.heartbeat_s) return;
    sent = Clock::now();
    if (master) {
      for (Peer& p : peers) {
        if (p.node >= 0 && !p.closed) send_line(p, "HB");
      }
    } else if (!up.closed) {
      send_line(up, "HB");
    }
  }

  void broadcast(const std::string& line) {
    for (Peer& p : peers) {
      if (p.node >= 0 && !p.closed) send_line(p, line);
    }
  }

  void wait_a_little() {
    std::vector<pollfd> fds;
    if (master) {
      fds.push_back({listen_fd, POLLIN, 0});
      for (const Peer& p : peers) {
        if (p.fd >= 0) fds.push_back({p.fd, POLLIN, 0});
      }
    } else if (up.fd >= 0) {
      fds.push_back({up.fd, POLLIN, 0});
    }
    if (fds.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } else {
      ::poll(fds.data(), fds.size(), 100);
    }
  }

  int master_rendezvous(int round, const std::function<bool()>& stop) {
    const auto start = Clock::now();
    for (;;) {
      if (stop && stop()) throw Error("ctrain-launch: stopped while waiting for the other nodes to join");
      accept_new();
      for (Peer& p : peers) {
        for (const std::string& line : read_lines(p)) {
          if (word(line, 0) != "HELLO" || p.node >= 0) continue;
          const std::string run = word(line, 1);
          int node = -1;
          try {
            node = std::stoi(word(line, 2));
          } catch (const std::exception&) {
          }
          std::string refuse;
          if (run != o.run_id) {
            refuse = "its --rdzv-id '" + run + "' differs from node 0's '" + o.run_id + "'";
          } else if (node < 1 || node >= o.nnodes) {
            refuse = "--node-rank " + word(line, 2) + " is not in 1.." + std::to_string(o.nnodes - 1) +
                     " (node 0 runs with --nnodes " + std::to_string(o.nnodes) + ")";
          } else if (std::any_of(peers.begin(), peers.end(), [&](const Peer& q) { return q.node == node && !q.closed; })) {
            refuse = "another launcher already joined as node " + std::to_string(node);
          }
          if (!refuse.empty()) {
            send_line(p, "REFUSE " + refuse);
            std::fprintf(stderr, "ctrain-launch: refused a launcher from %s: %s\n", p.addr.c_str(), refuse.c_str());
            p.close();
            continue;
          }
          p.node = node;
          p.heard = Clock::now();
          p.done = false;
        }
      }
      peers.erase(std::remove_if(peers.begin(), peers.end(), [](const Peer& p) { return p.closed; }), peers.end());
      std::set<int> joined;
      for (const Peer& p : peers) {
        if (p.node >= 0) joined.insert(p.node);
      }
      if (static_cast<int>(joined.size()) == o.nnodes - 1) {
        broadcast("GO " + std::to_string(round));
        self_done = false;
        sent = Clock::now();
        return round;
      }
      if (seconds_since(start) > o.join_timeout_s) {
        std::string missing;
        for (int n = 1; n < o.nnodes; ++n) {
          if (!joined.count(n)) missing += (missing.empty() ? "" : ", ") + std::to_string(n);
        }
        throw Error("ctrain-launch: node" + std::string(o.nnodes - 1 - joined.size() > 1 ? "s " : " ") + missing +
                        " did not join within --join-timeout " + fmt_s(o.join_timeout_s) + " s (node 0 listens on " +
                        where() + ")",
                    "start ctrain-launch on every node with the same --nnodes, --master-addr, --master-port and "
                    "--rdzv-id, or raise --join-timeout");
      }
      heartbeat();
      wait_a_little();
    }
  }

  // A connection to node 0's launcher, or an error text (retried by the caller).
  std::string connect_up() {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (const int rc = ::getaddrinfo(o.master_addr.c_str(), std::to_string(o.port).c_str(), &hints, &res); rc != 0) {
      return std::string("cannot resolve ") + o.master_addr + ": " + ::gai_strerror(rc);
    }
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    std::string err;
    if (fd < 0) {
      err = errno_text();
    } else if (::connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
      err = errno_text();
    } else {
      pollfd f{fd, POLLOUT, 0};
      int soerr = 0;
      socklen_t len = sizeof(soerr);
      if (::poll(&f, 1, 2000) <= 0) {
        err = "no answer in 2 s";
      } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
        err = std::strerror(soerr);
      }
    }
    ::freeaddrinfo(res);
    if (!err.empty()) {
      if (fd >= 0) ::close(fd);
      return err;
    }
    keepalive(fd);
    up = Peer();
    up.fd = fd;
    up.node = 0;
    up.addr = o.master_addr;
    return "";
  }

  int node_rendezvous(int round, const std::function<bool()>& stop) {
    const auto start = Clock::now();
    std::string last_error = "not tried";
    for (;;) {
      if (stop && stop()) throw Error("ctrain-launch: stopped while waiting to join node 0");
      if (seconds_since(start) > o.join_timeout_s) {
        throw Error("ctrain-launch: node " + std::to_string(o.node_rank) + " could not join node 0's launcher at " +
                        where() + " within --join-timeout " + fmt_s(o.join_timeout_s) + " s: " + last_error,
                    "start node 0 (--node-rank 0) with the same --master-addr and --master-port, or raise "
                    "--join-timeout");
      }
      if (up.fd < 0) {
        last_error = connect_up();
        if (!last_error.empty()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(500));
          continue;
        }
        send_line(up, "HELLO " + o.run_id + " " + std::to_string(o.node_rank) + " " + std::to_string(round));
      }
      for (const std::string& line : read_lines(up)) {
        if (word(line, 0) == "GO") {
          self_done = false;
          sent = Clock::now();
          return std::stoi(word(line, 1));
        }
        if (word(line, 0) == "REFUSE") {
          throw Error("ctrain-launch: node 0's launcher at " + where() + " refused node " +
                      std::to_string(o.node_rank) + ": " + rest(line));
        }
      }
      if (up.closed) {  // node 0 went away before the round began: try again
        last_error = "node 0's launcher closed the connection";
        up.fd = -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      heartbeat();
      wait_a_little();
    }
  }

  std::string master_poll() {
    heartbeat();
    accept_new();  // a node started again after it was lost: it waits for the next round
    for (Peer& p : peers) {
      if (p.node < 0) continue;
      for (const std::string& line : read_lines(p)) {
        const std::string w = word(line, 0);
        if (w == "DONE") p.done = true;
        if (w == "FAIL") {
          const std::string why = name(p) + ": " + rest(line);
          broadcast("ABORT " + why);
          return why;
        }
      }
      std::string lost;
      if (p.closed && !p.done) lost = "its launcher's connection closed (killed, or its host went down)";
      if (!p.closed && seconds_since(p.heard) > o.node_timeout_s) {
        lost = "nothing heard from its launcher for " + fmt_s(o.node_timeout_s) + " s (--node-timeout): link down?";
      }
      if (!lost.empty()) {
        const std::string why = name(p) + " is lost: " + lost;
        broadcast("ABORT " + why);
        return why;
      }
    }
    return "";
  }

  std::string node_poll() {
    heartbeat();
    for (const std::string& line : read_lines(up)) {
      if (word(line, 0) == "ABORT") return rest(line);
    }
    if (up.closed) return "node 0 (" + o.master_addr + ") is lost: its launcher's connection closed (killed, or its host went down)";
    if (seconds_since(up.heard) > o.node_timeout_s) {
      return "node 0 (" + o.master_addr + ") is lost: nothing heard from its launcher for " + fmt_s(o.node_timeout_s) +
             " s (--node-timeout): link down?";
    }
    return "";
  }
};

NodeAgent::NodeAgent(AgentOptions o) : impl_(std::make_unique<Impl>()) {
  impl_->o = std::move(o);
  impl_->master = impl_->o.node_rank == 0;
  if (impl_->master) impl_->listen_for_nodes();
}

NodeAgent::~NodeAgent() {
  for (Peer& p : impl_->peers) p.close();
  impl_->up.close();
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
}

int NodeAgent::rendezvous(int round, const std::function<bool()>& stop) {
  return impl_->master ? impl_->master_rendezvous(round, stop) : impl_->node_rendezvous(round, stop);
}

std::string NodeAgent::poll() { return impl_->master ? impl_->master_poll() : impl_->node_poll(); }

void NodeAgent::report_failure(const std::string& why) {
  if (impl_->master) {
    impl_->broadcast("ABORT node 0 (" + impl_->o.master_addr + "): " + why);
  } else {
    send_line(impl_->up, "FAIL " + why);
  }
}

std::string NodeAgent::finish(const std::function<bool()>& stop) {
  Impl& s = *impl_;
  if (!s.master) send_line(s.up, "DONE");
  for (;;) {
    if (stop && stop()) return "stopped by a signal while waiting for the other nodes to finish";
    if (s.master) {
      if (std::string why = s.master_poll(); !why.empty()) return why;
      if (std::all_of(s.peers.begin(), s.peers.end(), [](const Peer& p) { return p.node < 0 || p.done; })) {
        s.broadcast("END");
        return "";
      }
    } else {
      for (const std::string& line : read_lines(s.up)) {
        if (word(line, 0) == "END") return "";
        if (word(line, 0) == "ABORT") return rest(line);
      }
      if (s.up.closed) return "node 0 (" + s.o.master_addr + ") is lost: its launcher's connection closed before the job ended";
      if (seconds_since(s.up.heard) > s.o.node_timeout_s) {
        return "node 0 (" + s.o.master_addr + ") is lost: nothing heard for " + fmt_s(s.o.node_timeout_s) + " s";
      }
      s.heartbeat();
    }
    s.wait_a_little();
  }
}

void NodeAgent::end_round() {
  for (Peer& p : impl_->peers) p.close();
  impl_->peers.clear();
  impl_->up.close();
  impl_->up = Peer();
}

}  // namespace ctrain::distributed
