// Multi-node jobs on hosts of their own: each node is a network namespace with its own address,
// joined to the others by veth links, running its own ctrain-launch, as on a real cluster. Where
// namespaces cannot be made (not root, no CAP_SYS_ADMIN, no iproute2) the tests are skipped
// with the reason.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../support/fixtures.h"
#include "../support/hosts.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::Hosts;
using ctrain::testing::LinkDelay;
using ctrain::testing::max_abs_diff;
using ctrain::testing::read_text;
using ctrain::testing::run_command;
using ctrain::testing::spawn_command;
using ctrain::testing::wait_exit;

class MultiNodeTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  std::string mnist(const std::string& args) const {
    return mnist_on_data("--device cpu --learning-rate 0.05 --momentum 0.5 --epochs 2 " + args);
  }
  // `launcher` (ctrain-launch options of this node) then ctrain-mnist with `mnist_args`.
  std::string node(int rank, int nnodes, const std::string& mnist_args, const std::string& launcher = "") const {
    return bin("ctrain-launch") + " --nnodes " + std::to_string(nnodes) + " --node-rank " + std::to_string(rank) +
           " --nproc-per-node 1 --master-addr " + Hosts::address(0) + " --master-port 29517 " + launcher + " " +
           mnist("--batch-size 32 " + mnist_args);
  }
  // Rank r of a two-rank job on host r, started without a launcher (as mpirun or Slurm start
  // ranks): the launch variables set by hand, `env` before them.
  std::string bare_rank(const Hosts& hosts, int r, const std::string& mnist_args, const std::string& env = "") const {
    return hosts.on(r, env + "RANK=" + std::to_string(r) + " WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=" +
                           hosts.at(0) + " MASTER_PORT=29517 " +
                           mnist("--batch-size 32 --no-onnx --output-dir " + (out_ / ("r" + std::to_string(r))) + " " +
                                 mnist_args));
  }
  void expect_one_epoch_equals_one_host(const Hosts& hosts);
  // The exit code of `pid` if it ends within `seconds`, else -1 (and it is killed).
  static int exit_within(pid_t pid, double seconds) {
    int status = 0;
    const bool ended = ctrain::testing::poll_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, seconds);
    if (!ended) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

// No GLOO_SOCKET_IFNAME: each node finds the interface its route to MASTER_ADDR leaves by,
// says so, and the job equals the same two ranks run on one host.
TEST_F(MultiNodeTest, TwoHostsFindTheirInterfaceAndEqualAOneHostRun) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, "--output-dir " + (out_ / "h0"))), log0);
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, "--output-dir " + (out_ / "h1"))), log1);
  const int rc0 = wait_exit(n0), rc1 = wait_exit(n1);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  ASSERT_EQ(rc0, 0) << text0 << "\n--- node 1:\n" << text1;
  ASSERT_EQ(rc1, 0) << text1 << "\n--- node 0:\n" << text0;
  // Each node says which interface and address the others reach it on: its veth, never loopback.
  EXPECT_NE(text0.find("gloo over ct"), std::string::npos) << text0;
  EXPECT_NE(text0.find("(" + Hosts::address(0) + "): the route to MASTER_ADDR"), std::string::npos) << text0;
  EXPECT_NE(text1.find("(" + Hosts::address(1) + "): the route to MASTER_ADDR"), std::string::npos) << text1;
  EXPECT_EQ(text1.find("127.0."), std::string::npos) << text1;

  const auto one_host = run_command(ctrain::testing::launch_cmd(2, mnist("--batch-size 32 --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one_host.exit_code, 0) << one_host.output;
  const auto two = ctrain::testing::mlp_params(out_ / "h0/model.pt");
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), two), 1e-5);
  // A different run really differs, so the comparison above can fail.
  const auto other = run_command(mnist("--batch-size 32 --output-dir " + (out_ / "other")));  // global batch 32
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_GT(max_abs_diff(ctrain::testing::mlp_params(out_ / "other/model.pt"), two), 1e-3);
}

// A rank dying on node 1 stops node 0 within seconds, through the launchers' channel: node 0's
// rank would otherwise wait in its collective for --dist-timeout (600 s here).
TEST_F(MultiNodeTest, ARankFailingOnOneNodeStopsTheOtherNamingIt) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const std::string args = "--epochs 400 --dist-timeout 600 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args)), log0);
  const pid_t n1 = spawn_command(hosts.on(1, "CTRAIN_FAULT_AT=kill:1:3:1 " + node(1, 2, args)), log1);
  const int rc1 = exit_within(n1, 120);
  const int rc0 = exit_within(n0, 60);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  EXPECT_EQ(rc1, 128 + SIGKILL) << text1;
  ASSERT_NE(rc0, -1) << "node 0 still ran 60 s after node 1 ended\n" << text0;
  EXPECT_NE(rc0, 0) << text0;
  EXPECT_NE(text0.find("node 1 (" + Hosts::address(1) + "): rank 1 exited with code 137"), std::string::npos) << text0;
}

// Node 1's launcher SIGKILLed alone: its rank dies with it, and node 0 learns at once (the
// connection closes) and stops, naming the lost node.
TEST_F(MultiNodeTest, ALauncherKilledAloneStopsEveryNodeNamingIt) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const std::string args = "--epochs 400 --dist-timeout 600 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args)), log0);
  // --log-interval 7 marks node 1's rank among the machine's processes (namespaces share PIDs).
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, args + " --log-interval 7")), log1);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out_ / "o/metrics.jsonl") >= 1; }))
      << read_text(log0);
  ::kill(n1, SIGKILL);
  EXPECT_EQ(wait_exit(n1), 128 + SIGKILL);
  const int rc0 = exit_within(n0, 60);
  const std::string text0 = read_text(log0);
  ASSERT_NE(rc0, -1) << "node 0 still ran 60 s after node 1's launcher was killed\n" << text0;
  EXPECT_NE(rc0, 0) << text0;
  EXPECT_NE(text0.find("node 1 (" + Hosts::address(1) + ") is lost: its launcher's connection closed"),
            std::string::npos)
      << text0;
  // No rank of node 1 is left ("[t]": the pattern does not match the shell running pgrep).
  EXPECT_TRUE(ctrain::testing::poll_until(
      [&] { return run_command("pgrep -f 'ctrain-mnis[t] .*--log-interval 7'").exit_code != 0; }, 10));
}

// Ranks started without a launcher (mpirun, Slurm) whose Gloo connection cannot be made after
// the rendezvous: node 0's rank is told GLOO_SOCKET_IFNAME=lo (a user's slip) on hosts whose
// addresses sort above 127.0.0.1, so node 1's rank must connect to 127.0.0.1, its own host,
// while node 0's waits for it. Gloo alone would wait five times its timeout there (it sat 19
// minutes in Pair::connect before): every rank ends within --dist-timeout, naming the rank at
// the other end.
TEST_F(MultiNodeTest, AGlooConnectionThatCannotBeMadeEndsEveryRankNamingThePeer) {
  Hosts hosts(2, "192.168.77.");
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "rank0.log", log1 = out_ / "rank1.log";
  const pid_t r0 = spawn_command(bare_rank(hosts, 0, "--dist-timeout 12", "GLOO_SOCKET_IFNAME=lo "), log0);
  const pid_t r1 = spawn_command(bare_rank(hosts, 1, "--dist-timeout 12"), log1);
  // 40 s: past --dist-timeout and its start-up, short of Gloo's own 5 x 12 s.
  const int rc0 = exit_within(r0, 40), rc1 = exit_within(r1, 40);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  ASSERT_NE(rc0, -1) << "rank 0 still waited 40 s after it started\n" << text0;
  ASSERT_NE(rc1, -1) << "rank 1 still waited 40 s after it started\n" << text1;
  EXPECT_EQ(rc0, 1) << text0;
  EXPECT_EQ(rc1, 1) << text1;
  EXPECT_NE(text0.find("could not connect to rank 1 (host "), std::string::npos) << text0;
  EXPECT_NE(text0.find(", " + hosts.at(1) + ") over Gloo"), std::string::npos) << text0;
  EXPECT_NE(text1.find("could not connect to rank 0 (host "), std::string::npos) << text1;
  EXPECT_NE(text1.find(", 127.0.0.1) over Gloo"), std::string::npos) << text1;
}

// Ranks without a launcher (mpirun, Slurm) whose link is cut mid-epoch for good: no launcher's
// channel stops them, so each must give up in its collective at --dist-timeout and say whom it
// waited for: rank 0 names rank 1 and its host, rank 1 names the store it lost with rank 0.
TEST_F(MultiNodeTest, ALinkCutUnderRanksWithoutALauncherEndsEachNamingThePeer) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "rank0.log", log1 = out_ / "rank1.log";
  const pid_t r0 = spawn_command(bare_rank(hosts, 0, "--epochs 400 --dist-timeout 8"), log0);
  const pid_t r1 = spawn_command(bare_rank(hosts, 1, "--epochs 400 --dist-timeout 8"), log1);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out_ / "r0/metrics.jsonl") >= 1; }))
      << read_text(log0);
  hosts.cut(1);
  // 40 s: past --dist-timeout and the few seconds a rank gives its peers to report.
  const int rc0 = exit_within(r0, 40), rc1 = exit_within(r1, 40);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  ASSERT_NE(rc0, -1) << "rank 0 still waited 40 s after the link went down\n" << text0;
  ASSERT_NE(rc1, -1) << "rank 1 still waited 40 s after the link went down\n" << text1;
  EXPECT_EQ(rc0, 1) << text0;
  EXPECT_EQ(rc1, 1) << text1;
  EXPECT_NE(text0.find("failed on rank 0 (timeout 8 s)"), std::string::npos) << text0;
  EXPECT_NE(text0.find("waited for rank 1 (host "), std::string::npos) << text0;
  EXPECT_NE(text0.find(", " + hosts.at(1) + "), which reported no failure"), std::string::npos) << text0;
  EXPECT_NE(text1.find("failed on rank 1 (timeout 8 s)"), std::string::npos) << text1;
  EXPECT_NE(text1.find("the store on rank 0"), std::string::npos) << text1;
}

// A node that never comes is named after --join-timeout, before any rank starts.
TEST_F(MultiNodeTest, ANodeThatNeverJoinsIsNamed) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const auto r = run_command(hosts.on(0, node(0, 2, "--output-dir " + (out_ / "o"), "--join-timeout 2")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("node 1 did not join within --join-timeout 2 s"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[rank 0]"), std::string::npos) << r.output;  // no rank was started
}

// --max-restarts across nodes: node 1's launcher is killed while its rank is stopped mid-epoch
// (the job frozen at a known step), node 0 stops and waits for a new round, node 1's launcher
// is started again and joins it, and every rank resumes from the last checkpoint: the final
// weights equal an uninterrupted run's.
TEST_F(MultiNodeTest, ALostNodeStartedAgainRejoinsAndTheJobFinishesAsUninterrupted) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log", log1b = out_ / "node1b.log";
  // Both nodes write into one folder, as a cluster's shared filesystem: rank 0 saves, every rank
  // resumes from it.
  const std::string args = "--epochs 4 --dist-timeout 600 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args, "--max-restarts 1")), log0);
  const pid_t n1 = spawn_command(hosts.on(1, "CTRAIN_FAULT_AT=stop:2:3:1 " + node(1, 2, args, "--max-restarts 1")), log1);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out_ / "o/metrics.jsonl") >= 2; }))
      << read_text(log0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // rank 1 reaches its SIGSTOP
  ::kill(n1, SIGKILL);
  EXPECT_EQ(wait_exit(n1), 128 + SIGKILL);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return read_text(log0).find("restarting the group") != std::string::npos; }, 60))
      << read_text(log0);
  const pid_t n1b = spawn_command(hosts.on(1, node(1, 2, args, "--max-restarts 1")), log1b);
  const int rc1 = exit_within(n1b, 180), rc0 = exit_within(n0, 60);
  const std::string text0 = read_text(log0), text1 = read_text(log1b);
  ASSERT_EQ(rc0, 0) << text0 << "\n--- node 1, started again:\n" << text1;
  ASSERT_EQ(rc1, 0) << text1;
  EXPECT_NE(text0.find("node 1 (" + Hosts::address(1) + ") is lost"), std::string::npos) << text0;
  EXPECT_NE(text1.find("all 2 nodes joined (round 1)"), std::string::npos) << text1;

  const auto one_host = run_command(ctrain::testing::launch_cmd(2, mnist("--batch-size 32 --epochs 4 --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one_host.exit_code, 0) << one_host.output;
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), ctrain::testing::mlp_params(out_ / "o/model.pt")),
            1e-5);
}

// The link cut for longer than --node-timeout: both launchers hear nothing, stop their ranks
// (stuck in a collective until --dist-timeout otherwise) and exit non-zero naming the other.
TEST_F(MultiNodeTest, ALinkDownLongerThanTheNodeTimeoutEndsEveryNodeNamingThePeer) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const std::string args = "--epochs 400 --dist-timeout 600 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args, "--node-timeout 3")), log0);
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, args, "--node-timeout 3")), log1);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out_ / "o/metrics.jsonl") >= 1; }))
      << read_text(log0);
  hosts.cut(1);
  const int rc0 = exit_within(n0, 60), rc1 = exit_within(n1, 30);
  const std::string text0 = read_text(log0), text1 = read_text(log1);
  ASSERT_NE(rc0, -1) << "node 0 still ran 60 s after the link went down\n" << text0;
  ASSERT_NE(rc1, -1) << "node 1 still ran 30 s after node 0 ended\n" << text1;
  EXPECT_NE(rc0, 0) << text0;
  EXPECT_NE(rc1, 0) << text1;
  EXPECT_NE(text0.find("node 1 (" + Hosts::address(1) + ") is lost: nothing heard"), std::string::npos) << text0;
  EXPECT_NE(text1.find("node 0 (" + Hosts::address(0) + ") is lost: nothing heard"), std::string::npos) << text1;
}

// The link down for 1.5 s (far below --node-timeout and --dist-timeout): TCP retransmits, the
// job finishes, and its weights equal an uninterrupted one-host run's.
TEST_F(MultiNodeTest, ALinkDownBrieflyLosesNothing) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const std::string args = "--epochs 6 --batch-size 4 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args, "--node-timeout 20")), log0);
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, args, "--node-timeout 20")), log1);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out_ / "o/metrics.jsonl") >= 1; }))
      << read_text(log0);
  const size_t epochs_at_cut = ctrain::testing::count_lines(out_ / "o/metrics.jsonl");
  hosts.cut(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  hosts.restore(1);
  const int rc0 = exit_within(n0, 180), rc1 = exit_within(n1, 60);
  const std::string text0 = read_text(log0);
  ASSERT_EQ(rc0, 0) << text0;
  ASSERT_EQ(rc1, 0) << read_text(log1);
  EXPECT_LT(epochs_at_cut, 6u);  // the cut came before the end
  const auto one = run_command(ctrain::testing::launch_cmd(2, mnist("--epochs 6 --batch-size 4 --no-onnx --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), ctrain::testing::mlp_params(out_ / "o/model.pt")),
            1e-5);
}

// One epoch on the two hosts, whatever their link does to the packets, ends with the weights
// of the same two ranks on one host.
void MultiNodeTest::expect_one_epoch_equals_one_host(const Hosts& hosts) {
  const std::string log0 = out_ / "node0.log", log1 = out_ / "node1.log";
  const std::string args = "--epochs 1 --no-onnx --output-dir " + (out_ / "o");
  const pid_t n0 = spawn_command(hosts.on(0, node(0, 2, args)), log0);
  const pid_t n1 = spawn_command(hosts.on(1, node(1, 2, args)), log1);
  const int rc0 = exit_within(n0, 300), rc1 = exit_within(n1, 60);
  ASSERT_EQ(rc0, 0) << read_text(log0);
  ASSERT_EQ(rc1, 0) << read_text(log1);
  const auto one = run_command(ctrain::testing::launch_cmd(2, mnist("--epochs 1 --batch-size 32 --no-onnx --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), ctrain::testing::mlp_params(out_ / "o/model.pt")),
            1e-5);
}

// 50 ms of delay and 1% loss each way: slower, the same weights. tc netem where the kernel has
// it; elsewhere link_delay does the same from an NFQUEUE.
TEST_F(MultiNodeTest, DelayAndLossOnTheLinkLoseNothing) {
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  std::optional<LinkDelay> user_space;
  if (const std::string no_netem = hosts.netem(1, "delay 50ms loss 1%"); !no_netem.empty()) {
    user_space.emplace(hosts, 1, 50, 0.01, out_ / "link_delay");
    if (!user_space->why_not().empty()) GTEST_SKIP() << no_netem << "; " << user_space->why_not();
    std::printf("no sch_netem here: link_delay holds each packet 50 ms and drops 1%%\n");
  }
  expect_one_epoch_equals_one_host(hosts);
  const long long dropped = user_space ? user_space->stop() : hosts.dropped(1);
  std::printf("the link dropped %lld packets\n", dropped);
  EXPECT_GT(dropped, 0) << "no packet was lost: the loss was not tried";
}

// mpirun across the two hosts: Open MPI starts rank 1's orted on host 1 through a launch agent
// that enters its namespace (ssh's place on a cluster), the ranks read Open MPI's variables,
// and the job equals the same two ranks on one host.
TEST_F(MultiNodeTest, MpirunAcrossTwoHostsEqualsAOneHostRun) {
  if (run_command("command -v mpirun").exit_code != 0) GTEST_SKIP() << "mpirun not installed (openmpi-bin)";
  Hosts hosts(2);
  if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
  const std::string agent = out_ / "ssh-into-namespace.sh";
  ctrain::testing::write_bytes(agent,
                               "#!/bin/sh\n# mpirun's rsh agent: AGENT HOST COMMAND... runs COMMAND on that host.\n"
                               "host=$1; shift\ncase \"$host\" in\n  " + Hosts::address(0) + ") ns=" + hosts.name(0) +
                                   ";;\n  " + Hosts::address(1) + ") ns=" + hosts.name(1) +
                                   ";;\n  *) echo \"unknown host $host\" >&2; exit 1;;\nesac\nexec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n",
                               false);
  ASSERT_EQ(::chmod(agent.c_str(), 0755), 0);
  const auto r = run_command(hosts.on(
      0, "mpirun --allow-run-as-root -np 2 -H " + Hosts::address(0) + "," + Hosts::address(1) +
             " --mca plm_rsh_agent " + agent + " -x MASTER_ADDR=" + Hosts::address(0) + " -x MASTER_PORT=29517 " +
             mnist("--batch-size 32 --no-onnx --output-dir " + (out_ / "mpi"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(" + Hosts::address(1) + "): the route to MASTER_ADDR"), std::string::npos) << r.output;
  const auto one = run_command(ctrain::testing::launch_cmd(2, mnist("--batch-size 32 --no-onnx --output-dir " + (out_ / "one"))));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(out_ / "one/model.pt"), ctrain::testing::mlp_params(out_ / "mpi/model.pt")),
            1e-5);
}

}  // namespace
