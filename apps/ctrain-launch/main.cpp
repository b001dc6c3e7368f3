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
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <string>

#include "core/stop.h"
#include "distributed/supervisor.h"

int main(int argc, char** argv) {
  ctrain::distributed::GroupOptions o;
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
  o.omp_num_threads_set = std::getenv("OMP_NUM_THREADS") != nullptr;
  // SIGINT/SIGTERM are forwarded to the ranks; a second one does not cut their stop short.
  ctrain::StopOptions stop;
  stop.second_kills = false;
  ctrain::install_stop_handlers(stop);
  return ctrain::distributed::supervise(o);
}
