#pragma once
// ctrain-launch's work on one node, apart from its command line: start the node's ranks with
// torchrun's environment, stream their output prefixed by rank, forward a stop signal, stop
// every rank when one fails, restart the group (--max-restarts), and across nodes meet the
// other launchers and stop with them (node_agent.h). Plain POSIX, no LibTorch.
#include <string>
#include <vector>

namespace ctrain::distributed {

struct GroupOptions {
  int nproc = 1, nnodes = 1, node_rank = 0, master_port = 29500, max_restarts = 0;
  std::string master_addr = "127.0.0.1";
  std::string run_id;  // --rdzv-id; default: unique per launch on one node, "none" (torchrun's) across nodes
  double grace_s = 5.0;
  int agent_port = 0;           // --agent-port; 0: --master-port + 1
  double join_timeout_s = 600;  // --join-timeout
  double node_timeout_s = 30;   // --node-timeout
  bool omp_num_threads_set = false;  // the user set OMP_NUM_THREADS (else 1 per rank when nproc > 1)
  std::vector<std::string> command;  // PROGRAM ARGS...
};

// Runs the job's ranks on this node to the end, restarts included. Reads the stop signal of
// core/stop.h (installed by the program). Returns the exit code: 0 only if every rank of the
// last round succeeded, else the first failing rank's code (128 + signal if killed), 1 when
// another node failed or was lost, 128 + signal when stopped.
int supervise(const GroupOptions& o);

}  // namespace ctrain::distributed
