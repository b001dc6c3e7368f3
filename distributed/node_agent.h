#pragma once
// The launchers' own channel across nodes (ctrain-launch --nnodes > 1), as torchrun's elastic
// agents have theirs: node 0's launcher listens on the agent port (--master-port + 1 unless
// told), every other node's launcher connects to it. Over it they
// - meet before any rank starts (a node that never comes is named after --join-timeout, rather
//   than every rank waiting in the trainers' rendezvous),
// - learn within seconds that a node's rank failed or that a node is gone (its launcher killed:
//   the connection closes; its link cut: no heartbeat for --node-timeout), so every node stops
//   its ranks and exits non-zero naming the lost node, instead of waiting in a collective, and
// - with --max-restarts, meet again in a new round: every node restarts its ranks, which resume
//   from the last checkpoint; a node whose launcher was started again joins that round.
// Plain POSIX sockets and a line protocol ("HELLO run node round", "GO round", "HB", "FAIL why",
// "ABORT why", "DONE", "END"): the launcher links no LibTorch, and c10d's TCPStore belongs to
// the trainers. Written by hand for that reason.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace ctrain::distributed {

struct AgentOptions {
  int nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int port = 29501;
  std::string run_id;
  double join_timeout_s = 600;  // torchrun's join_timeout
  double node_timeout_s = 30;   // silence after which a node counts as lost
  double heartbeat_s = 1;
};

class NodeAgent {
 public:
  explicit NodeAgent(AgentOptions o);
  ~NodeAgent();
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  // Every node meets for a round before its ranks start. Node 0 waits until every other node's
  // launcher has said HELLO (a node started again after a failure joins whatever round the job
  // is in), then tells them all to go; the others connect (retrying until the master listens)
  // and wait for that. Returns the round to run, the job's restart count. Throws ctrain::Error
  // naming the nodes that did not come (or why the master refused this node) after
  // --join-timeout, or when `stop()` returns true (a signal).
  int rendezvous(int round, const std::function<bool()>& stop);

  // Sends heartbeats and reads the other side; call it often (the launcher's loop does, every
  // 100 ms). Empty while all is well; else why this node must stop its ranks: another node's
  // rank failed, or a node is lost (its connection closed, or silent for --node-timeout).
  std::string poll();

  // This node's ranks failed (`why` names the rank and its code): the other nodes stop theirs.
  void report_failure(const std::string& why);

  // This node's ranks all succeeded. Waits (bounded by --node-timeout of silence) until the
  // job ends: "" when every node succeeded, else why not.
  std::string finish(const std::function<bool()>& stop);

  // Leaves the round after a failure (the next rendezvous starts afresh).
  void end_round();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctrain::distributed
