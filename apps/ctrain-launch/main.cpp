// ctrain-launch: torchrun's interface for any program (ctrain's trainers among them).
//
//   ctrain-launch --nproc-per-node N [--nnodes M --node-rank K --master-addr A
//                 --master-port P [--agent-port Q --join-timeout S --node-timeout S]]
//                 [--rdzv-id ID] [--max-restarts R] PROGRAM ARGS...
//
// Spawns N processes with torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RUN_ID,
// TORCHELASTIC_RESTART_COUNT),
// streams their output prefixed by rank, forwards SIGINT/SIGTERM, and when one rank fails
// stops the others. --max-restarts R restarts the whole group up to R times (the trainers
// see TORCHELASTIC_RESTART_COUNT > 0 and resume from their newest checkpoint). Exit code: 0
// only if every rank succeeded, else the first failing rank's code (128+signal if killed).
// Across nodes the launchers meet and watch each other over distributed/node_agent.h: a rank
// failing or a node lost on one node stops every node within seconds.
//
// Written by hand: process supervision with pipes and signals is a few hundred lines of POSIX
// that no C++ library in Debian packages for this purpose.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <memory>
#include <thread>
#include <vector>

#include "core/error.h"
#include "distributed/node_agent.h"

namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1;        // read end of the child's stdout+stderr pipe
  std::string partial;    // output not yet terminated by a newline
  bool running = false;
  int exit_code = 0;      // 128+signal when killed
  bool signaled = false;  // killed by a signal
};

struct Options {
  int nproc = 1, nnodes = 1, node_rank = 0, master_port = 29500, max_restarts = 0;
  std::string master_addr = "127.0.0.1";
  std::string run_id;  // --rdzv-id; default: unique per launch on one node, "none" (torchrun's) across nodes
  double grace_s = 5.0;
  int agent_port = 0;           // --agent-port; 0: --master-port + 1
  double join_timeout_s = 600;  // --join-timeout
  double node_timeout_s = 30;   // --node-timeout
  std::vector<std::string> command;
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

Child spawn(const Options& o, int local_rank, int attempt) {
  Child c;
  c.rank = o.node_rank * o.nproc + local_rank;
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  const pid_t launcher = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // No orphans: the rank dies with its launcher, however the launcher dies (SIGKILL by an
    // OOM killer or a scheduler included), instead of training on unsupervised. SIGKILL, not
    // SIGTERM: a rank whose peers are gone would wait in a collective until --dist-timeout.
    // The check after it covers a launcher that died before the prctl took effect.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != launcher) ::_exit(1);
    ::setpgid(0, 0);  // own process group: a signal reaches the rank and anything it spawned
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    auto set = [](const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); };
    set("RANK", std::to_string(c.rank));
    set("LOCAL_RANK", std::to_string(local_rank));
    set("WORLD_SIZE", std::to_string(o.nproc * o.nnodes));
    set("LOCAL_WORLD_SIZE", std::to_string(o.nproc));
    set("GROUP_RANK", std::to_string(o.node_rank));
    set("MASTER_ADDR", o.master_addr);
    set("MASTER_PORT", std::to_string(o.master_port));
    set("TORCHELASTIC_RUN_ID", o.run_id);
    set("TORCHELASTIC_RESTART_COUNT", std::to_string(attempt));
    set("TORCHELASTIC_MAX_RESTARTS", std::to_string(o.max_restarts));
    // As torchrun: N processes sharing a node each get one intra-op thread unless told.
    if (o.nproc > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) set("OMP_NUM_THREADS", "1");
    std::vector<char*> argv;
    for (const auto& s : o.command) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "ctrain-launch: cannot execute %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, so there is no race with an early signal
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  c.pid = pid;
  c.out_fd = fds[0];
  c.running = true;
  return c;
}

void signal_all(std::vector<Child>& cs, int sig) {
  for (auto& c : cs) {
    if (c.running) ::kill(-c.pid, sig);
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
    if (!c.running) continue;
    int status = 0;
    const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r != c.pid) continue;
    c.running = false;
    c.signaled = WIFSIGNALED(status);
    c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    drain(c, true);
    if (c.exit_code != 0) failed.push_back(i);
  }
  std::stable_partition(failed.begin(), failed.end(), [&](size_t i) { return cs[i].signaled; });
  return failed;
}

// Runs one attempt of the group; returns 0 or the first failing rank's exit code (1 when the
// ranks were stopped because another node failed or was lost). With several nodes, `agent`
// carries this node's failure to the others and theirs to this one.
int run_group(const Options& o, int attempt, ctrain::distributed::NodeAgent* agent) {
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
    if (g_signal != 0 && forwarded != g_signal) {
      forwarded = g_signal;
      std::fprintf(stderr, "ctrain-launch: forwarding signal %d to all ranks\n", forwarded);
      signal_all(cs, forwarded);
      stopping = true;
      if (first_failure == 0) first_failure = 128 + forwarded;
      if (agent) agent->report_failure("its launcher got signal " + std::to_string(forwarded));
      stop_deadline = std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
    }
    const std::vector<size_t> failed = reap(cs);
    if (!failed.empty() && !stopping) {
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
    for (auto& c : cs) any_running |= c.running;
    if (!any_running) {
      for (auto& c : cs) drain(c, true);
      break;
    }
  }
  for (auto& c : cs) {
    if (c.out_fd >= 0) ::close(c.out_fd);
  }
  if (agent && first_failure == 0) {  // this node's ranks succeeded: did every node's?
    if (const std::string why = agent->finish([] { return g_signal != 0; }); !why.empty()) {
      std::fprintf(stderr, "ctrain-launch: %s\n", why.c_str());
      return 1;
    }
  }
  return first_failure;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"ctrain-launch: start N ranks of a program with torchrun's environment"};
  app.prefix_command();  // everything after PROGRAM belongs to the program
  app.add_option("--nproc-per-node,--nproc_per_node", o.nproc, "processes on this node")
      ->check(CLI::Range(1, 4096));
  app.add_option("--nnodes", o.nnodes, "number of nodes")->check(CLI::Range(1, 65536));
  app.add_option("--node-rank,--node_rank", o.node_rank, "index of this node")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--master-addr,--master_addr", o.master_addr, "address of rank 0's node")
      ->check([](const std::string& v) { return v.empty() ? std::string("must not be empty") : std::string(); });
  app.add_option("--master-port,--master_port", o.master_port, "rendezvous port")
      ->check(CLI::Range(1, 65535));
  app.add_option("--rdzv-id,--rdzv_id,--run-id", o.run_id,
                 "job id shared by every node; ranks of another id are refused at rendezvous")
      ->check([](const std::string& v) {
        if (v.empty()) return std::string("must not be empty");
        return v.find_first_of(" \t\r\n") == std::string::npos ? std::string() : std::string("must not contain spaces");
      });
  app.add_option("--max-restarts,--max_restarts", o.max_restarts,
                 "restart the whole group up to R times after a failure")
      ->check(CLI::NonNegativeNumber);
  auto finite_seconds = [](const std::string& v) {  // CLI11's PositiveNumber lets inf through
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    return end != v.c_str() && *end == '\0' && std::isfinite(d) && d > 0 ? std::string()
                                                                       : std::string("must be a finite number of seconds > 0");
  };
  app.add_option("--agent-port,--agent_port", o.agent_port,
                 "with --nnodes > 1: the port node 0's launcher listens on for the others' (default: --master-port + 1)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--join-timeout,--join_timeout", o.join_timeout_s,
                 "with --nnodes > 1: seconds to wait for every node's launcher before giving up, naming the missing")
      ->check(finite_seconds);
  app.add_option("--node-timeout,--node_timeout", o.node_timeout_s,
                 "with --nnodes > 1: seconds of silence after which a node counts as lost and every node stops")
      ->check(finite_seconds);
  app.add_option("--stop-grace,--stop_grace", o.grace_s,
                 "seconds between SIGTERM and SIGKILL when stopping ranks")
      ->check([](const std::string& v) {  // CLI11's NonNegativeNumber lets nan and inf through
        char* end = nullptr;
        const double d = std::strtod(v.c_str(), &end);
        return end != v.c_str() && *end == '\0' && std::isfinite(d) && d >= 0
                   ? std::string()
                   : std::string("must be a finite number of seconds >= 0");
      });
  try {
    app.parse(argc, argv);
    o.command = app.remaining();
    if (o.command.empty()) throw CLI::ValidationError("PROGRAM", "missing: ctrain-launch [options] PROGRAM ARGS...");
    if (o.node_rank >= o.nnodes) throw CLI::ValidationError("--node-rank", "must be below --nnodes");
    if (o.run_id.empty()) {
      // One node: an id no other launch shares, so a stray rank of another job on the same
      // port is refused. Several nodes must agree without talking: torchrun's default.
      char host[256] = {0};
      ::gethostname(host, sizeof(host) - 1);
      o.run_id = o.nnodes == 1 ? std::string(host) + "-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(::time(nullptr))
                               : "none";
    }
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // Several nodes: the launchers meet before each round and tell each other of failures.
  std::unique_ptr<ctrain::distributed::NodeAgent> agent;
  ctrain::distributed::AgentOptions ao;
  if (o.nnodes > 1) {
    ao.nnodes = o.nnodes;
    ao.node_rank = o.node_rank;
    ao.master_addr = o.master_addr;
    ao.port = o.agent_port > 0 ? o.agent_port : o.master_port + 1;
    ao.run_id = o.run_id;
    ao.join_timeout_s = o.join_timeout_s;
    ao.node_timeout_s = o.node_timeout_s;
  }
  const auto stop = [] { return g_signal != 0; };
  int round = 0;
  for (int attempt = 0;; ++attempt) {
    int code;
    try {
      if (o.nnodes > 1) {
        if (!agent) agent = std::make_unique<ctrain::distributed::NodeAgent>(ao);
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
    if (g_signal != 0) return 128 + g_signal;
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
