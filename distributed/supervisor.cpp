#include "distributed/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/process.h"
#include "core/stop.h"
#include "distributed/node_agent.h"

namespace ctrain::distributed {
namespace {

struct Child {
  int rank = 0;
  Process process;
  int out_fd = -1;        // read end of the child's stdout+stderr pipe
  std::string partial;    // output not yet terminated by a newline
  int exit_code = 0;      // 128+signal when killed
};


void emit(const Child& c, const std::string& line) {
  std::string out = "[rank " + std::to_string(c.rank) + "] " + line + "\n";
  (void)!::write(STDOUT_FILENO, out.data(), out.size());
}

void drain(Child& c, bool final) {
  char buf[8192];
  while (c.out_fd >= 0) {
    const ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
    if (n > 0) {
      c.partial.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = c.partial.find('\n')) != std::string::npos) {
        emit(c, c.partial.substr(0, nl));
        c.partial.erase(0, nl + 1);
      }
      continue;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {  // EOF or error
      ::close(c.out_fd);
      c.out_fd = -1;
    }
    break;
  }
  if (final && !c.partial.empty()) {
    emit(c, c.partial);
    c.partial.clear();
  }
}

Child spawn(const GroupOptions& o, int local_rank, int attempt) {
  Child c;
  c.rank = o.node_rank * o.nproc + local_rank;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  SpawnOptions so;
  so.output_fd = fds[1];
  // No orphans: the rank dies with its launcher, however the launcher dies (SIGKILL by an OOM
  // killer or a scheduler included), instead of training on unsupervised. SIGKILL, not
  // SIGTERM: a rank whose peers are gone would wait in a collective until --dist-timeout.
  so.death_signal = SIGKILL;
  so.who = "ctrain-launch";
  so.env = {{"RANK", std::to_string(c.rank)},
            {"LOCAL_RANK", std::to_string(local_rank)},
            {"WORLD_SIZE", std::to_string(o.nproc * o.nnodes)},
            {"LOCAL_WORLD_SIZE", std::to_string(o.nproc)},
            {"GROUP_RANK", std::to_string(o.node_rank)},
            {"MASTER_ADDR", o.master_addr},
            {"MASTER_PORT", std::to_string(o.master_port)},
            {"TORCHELASTIC_RUN_ID", o.run_id},
            {"TORCHELASTIC_RESTART_COUNT", std::to_string(attempt)},
            {"TORCHELASTIC_MAX_RESTARTS", std::to_string(o.max_restarts)}};
  // As torchrun: N processes sharing a node each get one intra-op thread unless told.
  if (o.nproc > 1 && !o.omp_num_threads_set) so.env.emplace_back("OMP_NUM_THREADS", "1");
  try {
    c.process = Process::spawn(o.command, so);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  c.out_fd = fds[0];
  return c;
}

void signal_all(std::vector<Child>& cs, int sig) {
  for (auto& c : cs) {
    c.process.signal_group(sig);
  }
}

// Reaps exited children; returns the indexes of those that failed in this call, the first
// failure first: a rank killed by a signal before ranks that exited with a code. A rank that
// is killed usually takes its peers down with it (they exit 1 on the broken collective), and
// when they are reaped in the same call, index order would blame a peer for the kill.
std::vector<size_t> reap(std::vector<Child>& cs) {
  std::vector<size_t> failed;
  for (size_t i = 0; i < cs.size(); ++i) {
    Child& c = cs[i];
    if (!c.process.running()) continue;
    const auto code = c.process.poll();
    if (!code) continue;
    c.exit_code = *code;
    drain(c, true);
    if (c.exit_code != 0) failed.push_back(i);
  }
  std::stable_partition(failed.begin(), failed.end(), [&](size_t i) { return cs[i].process.signaled(); });
  return failed;
}

// A rank that exited with a code (not killed) on one node is often the echo of a rank that
// died on another: its collective's connection broke. Before this node names its own rank as
// the failure, the other node's report gets this long to arrive, so that the failure every
// node names is the cause. A failure with no other node's report costs this much delay.
constexpr std::chrono::milliseconds kEchoWindow{2000};

// The failure another node reports within kEchoWindow ("" for none, or on a stop signal).
std::string failure_elsewhere(NodeAgent& agent) {
  const auto until = std::chrono::steady_clock::now() + kEchoWindow;
  for (;;) {
    if (std::string why = agent.poll(); !why.empty()) return why;
    if (stop_signal() != 0 || std::chrono::steady_clock::now() >= until) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Runs one attempt of the group; returns 0 or the first failing rank's exit code (1 when the
// ranks were stopped because another node failed or was lost). With several nodes, `agent`
// carries this node's failure to the others and theirs to this one.
int run_group(const GroupOptions& o, int attempt, ctrain::distributed::NodeAgent* agent) {
  std::vector<Child> cs;
  for (int i = 0; i < o.nproc; ++i) cs.push_back(spawn(o, i, attempt));
  int first_failure = 0;
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  int forwarded = 0;
  auto stop_ranks = [&] {
    signal_all(cs, SIGTERM);
    stopping = true;
    stop_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
  };
  for (;;) {
    std::vector<pollfd> fds;
    for (auto& c : cs) {
      if (c.out_fd >= 0) fds.push_back({c.out_fd, POLLIN, 0});
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 100);
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (auto& c : cs) drain(c, false);
    if (stop_signal() != 0 && forwarded != stop_signal()) {
      forwarded = stop_signal();
      std::fprintf(stderr, "ctrain-launch: forwarding signal %d to all ranks\n", forwarded);
      signal_all(cs, forwarded);
      stopping = true;
      if (first_failure == 0) first_failure = 128 + forwarded;
      if (agent) agent->report_failure("its launcher got signal " + std::to_string(forwarded));
      stop_deadline = std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
    }
    const std::vector<size_t> failed = reap(cs);
    std::string remote;  // another node's failure, when it is the cause of this node's
    if (!failed.empty() && !stopping && agent && !cs[failed.front()].process.signaled()) {
      remote = failure_elsewhere(*agent);
    }
    if (!remote.empty()) {
      for (size_t i : failed) std::fprintf(stderr, "ctrain-launch: rank %d exited with code %d\n", cs[i].rank, cs[i].exit_code);
      std::fprintf(stderr, "ctrain-launch: %s; stopping the ranks of node %d\n", remote.c_str(), o.node_rank);
      first_failure = 1;
      stop_ranks();
    } else if (!failed.empty() && !stopping) {
      first_failure = cs[failed.front()].exit_code;
      // Every rank that failed before the stop, one line each; later exits are the stop's.
      for (size_t i : failed) {
        std::fprintf(stderr, "ctrain-launch: rank %d exited with code %d%s\n", cs[i].rank, cs[i].exit_code,
                     i == failed.front() ? "; stopping the other ranks" : "");
      }
      if (agent) {
        agent->report_failure("rank " + std::to_string(cs[failed.front()].rank) + " exited with code " +
                              std::to_string(first_failure));
      }
      stop_ranks();
    }
    if (agent && !stopping) {
      if (const std::string why = agent->poll(); !why.empty()) {
        std::fprintf(stderr, "ctrain-launch: %s; stopping the ranks of node %d\n", why.c_str(), o.node_rank);
        first_failure = 1;
        stop_ranks();
      }
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) {
      signal_all(cs, SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
    bool any_running = false;
    for (auto& c : cs) any_running |= c.process.running();
    if (!any_running) {
      for (auto& c : cs) drain(c, true);
      break;
    }
  }
  for (auto& c : cs) {
    if (c.out_fd >= 0) ::close(c.out_fd);
  }
  if (agent && first_failure == 0) {  // this node's ranks succeeded: did every node's?
    if (const std::string why = agent->finish([] { return stop_signal() != 0; }); !why.empty()) {
      std::fprintf(stderr, "ctrain-launch: %s\n", why.c_str());
      return 1;
    }
  }
  return first_failure;
}

}  // namespace

int supervise(const GroupOptions& o) {
  // Several nodes: the launchers meet before each round and tell each other of failures.
  std::unique_ptr<NodeAgent> agent;
  AgentOptions ao;
  if (o.nnodes > 1) {
    ao.nnodes = o.nnodes;
    ao.node_rank = o.node_rank;
    ao.master_addr = o.master_addr;
    ao.port = o.agent_port > 0 ? o.agent_port : o.master_port + 1;
    ao.run_id = o.run_id;
    ao.join_timeout_s = o.join_timeout_s;
    ao.node_timeout_s = o.node_timeout_s;
  }
  const auto stop = [] { return stop_signal() != 0; };
  int round = 0;
  for (int attempt = 0;; ++attempt) {
    int code;
    try {
      if (o.nnodes > 1) {
        if (!agent) agent = std::make_unique<NodeAgent>(ao);
        round = agent->rendezvous(round, stop);
        std::fprintf(stderr, "ctrain-launch: all %d nodes joined (round %d); starting %d rank(s) on node %d\n",
                     o.nnodes, round, o.nproc, o.node_rank);
      } else {
        round = attempt;
      }
      code = run_group(o, round, agent.get());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s%s\n", dynamic_cast<const ctrain::Error*>(&e) ? "" : "ctrain-launch: error: ", e.what());
      return 1;
    }
    if (code == 0) return 0;
    if (stop_signal() != 0) return 128 + stop_signal();
    if (agent) agent->end_round();
    if (attempt >= o.max_restarts) {
      if (o.max_restarts > 0) {
        std::fprintf(stderr, "ctrain-launch: giving up after %d restarts\n", o.max_restarts);
      }
      return code;
    }
    ++round;
    std::fprintf(stderr, "ctrain-launch: restarting the group (restart %d of %d)%s\n", attempt + 1, o.max_restarts,
                 o.nnodes > 1 ? ", once every node has joined again" : "");
  }
}

}  // namespace ctrain::distributed
