// ctrain-launch and distributed ctrain-mnist as users run them: real processes, real ranks.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>

#include "../support/fixtures.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::max_abs_diff;
using ctrain::testing::free_port;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

std::string launch(int nproc, const std::string& rest) { return ctrain::testing::launch_cmd(nproc, rest); }

// `nnodes` launchers of `nproc` ranks each on this host, as the nodes of one job (they meet over
// the launchers' channel on a shared port), run together: their outputs together.
std::string all_nodes(int nnodes, int nproc, const std::string& rest) {
  const int port = ctrain::testing::free_port(), agent_port = ctrain::testing::free_port();
  std::string cmd;
  for (int n = 0; n < nnodes; ++n) {
    cmd += ctrain::testing::bin("ctrain-launch") + " --nproc-per-node " + std::to_string(nproc) + " --nnodes " +
           std::to_string(nnodes) + " --node-rank " + std::to_string(n) + " --master-port " + std::to_string(port) +
           " --agent-port " + std::to_string(agent_port) + " --join-timeout 60 " + rest +
           (n + 1 < nnodes ? " & " : "; wait");
  }
  return cmd;
}

TEST(LaunchTest, SetsTorchrunVariablesAndPrefixesOutput) {
  const auto r = run_command(launch(2, "sh -c 'echo \"$RANK/$WORLD_SIZE/$LOCAL_RANK/$LOCAL_WORLD_SIZE/$MASTER_ADDR/$TORCHELASTIC_RESTART_COUNT\"'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 0] 0/2/0/2/127.0.0.1/0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 1] 1/2/1/2/127.0.0.1/0"), std::string::npos) << r.output;
}

TEST(LaunchTest, EveryRankOfALaunchSharesOneRunIdThatNoOtherLaunchHas) {
  const std::string echo = "sh -c 'echo \"id=$TORCHELASTIC_RUN_ID\"'";
  const auto a = run_command(launch(2, echo)), b = run_command(launch(1, echo));
  auto ids = [](const std::string& out) {
    std::vector<std::string> v;
    for (size_t at = out.find("id="); at != std::string::npos; at = out.find("id=", at + 1)) {
      v.push_back(out.substr(at + 3, out.find('\n', at) - at - 3));
    }
    return v;
  };
  const auto ia = ids(a.output), ib = ids(b.output);
  ASSERT_EQ(ia.size(), 2u) << a.output;
  ASSERT_EQ(ib.size(), 1u) << b.output;
  EXPECT_FALSE(ia[0].empty());
  EXPECT_EQ(ia[0], ia[1]);
  EXPECT_NE(ia[0], ib[0]);
  // Across nodes the id must be given (or be torchrun's default) so that every node agrees.
  EXPECT_NE(run_command(all_nodes(2, 1, echo)).output.find("id=none"), std::string::npos);
  EXPECT_NE(run_command(launch(1, "--rdzv-id exp7 " + echo)).output.find("id=exp7"), std::string::npos);
}

TEST(LaunchTest, MultiNodeRanks) {
  const auto r = run_command(all_nodes(3, 2, "sh -c 'echo \"r=$RANK w=$WORLD_SIZE g=$GROUP_RANK\"'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 5] r=5 w=6 g=2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 0] r=0 w=6 g=0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("all 3 nodes joined (round 0)"), std::string::npos) << r.output;
}

TEST(LaunchTest, AFailingRankStopsTheOthersAndSetsTheExitCode) {
  // Rank 0 would sleep a minute; it says when the launcher's SIGTERM stops it. Rank 1 fails only
  // once rank 0's trap is in place (the file `ready`), or the SIGTERM could end rank 0's shell
  // before it has a trap to say so.
  TempDir dir;
  const std::string ready = dir / "ready";
  const auto r = run_command(launch(
      2, "sh -c 'if [ $RANK = 1 ]; then while [ ! -e " + ready + " ]; do sleep 0.02; done; exit 3; fi; "
         "trap \"echo stopped by SIGTERM; exit 143\" TERM; touch " + ready + "; sleep 60 & wait'"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("[rank 0] stopped by SIGTERM"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1 exited with code 3"), std::string::npos) << r.output;
}

// Rank 1 killed by a signal and rank 0 exiting 1 (as it does when its peer vanishes), both
// reaped in one pass: the kill is the failure reported first and the exit code, though rank 0
// comes first in rank order. The ranks stop themselves; the test stops the launcher, lets both
// ranks end, and only then lets the launcher look.
TEST(LaunchTest, AKilledRankIsTheFailureReportedOverOneThatExitedWithACode) {
  TempDir dir;
  const std::string log = dir / "log";
  const pid_t launcher = ctrain::testing::spawn_command(
      launch(2, "sh -c 'echo $$ > " + (dir / "pid") + "$RANK; kill -STOP $$; if [ $RANK = 1 ]; then kill -9 $$; fi; exit 1'"),
      log);
  auto state = [](pid_t pid) {  // the state letter in /proc/PID/stat (T stopped, Z ended)
    const std::string stat = ctrain::testing::read_text("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    return paren == std::string::npos || paren + 2 >= stat.size() ? '?' : stat[paren + 2];
  };
  auto rank_pid = [&](int r) { return std::atoi(ctrain::testing::read_text(dir / ("pid" + std::to_string(r))).c_str()); };
  ASSERT_TRUE(ctrain::testing::poll_until([&] {
    return rank_pid(0) > 0 && rank_pid(1) > 0 && state(rank_pid(0)) == 'T' && state(rank_pid(1)) == 'T';
  }, 60)) << ctrain::testing::read_text(log);
  ::kill(launcher, SIGSTOP);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return state(launcher) == 'T'; }, 60));
  for (int r : {0, 1}) ::kill(rank_pid(r), SIGCONT);
  EXPECT_TRUE(ctrain::testing::poll_until([&] { return state(rank_pid(0)) == 'Z' && state(rank_pid(1)) == 'Z'; }, 60));
  ::kill(launcher, SIGCONT);
  EXPECT_EQ(ctrain::testing::wait_exit(launcher), 137) << ctrain::testing::read_text(log);
  const std::string out = ctrain::testing::read_text(log);
  EXPECT_NE(out.find("rank 1 exited with code 137; stopping the other ranks"), std::string::npos) << out;
  // Rank 0 is not blamed. (Its own line is not asserted: were the launcher stopped between its
  // two waitpid calls, it would find rank 0 only in the stop's pass, which it does not report.)
  EXPECT_EQ(out.find("rank 0 exited with code 1; stopping"), std::string::npos) << out;
}

TEST(LaunchTest, RestartsTheGroupUpToMaxRestarts) {
  const std::string prog = "sh -c 'if [ $TORCHELASTIC_RESTART_COUNT = 0 ] && [ $RANK = 1 ]; then exit 4; fi; echo attempt $TORCHELASTIC_RESTART_COUNT ok'";
  auto r = run_command(launch(2, "--max-restarts 1 " + prog));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("restarting the group"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 1] attempt 1 ok"), std::string::npos) << r.output;
  r = run_command(launch(2, "--max-restarts 2 sh -c 'exit 5'"));
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("giving up after 2 restarts"), std::string::npos) << r.output;
}

// A launcher SIGKILLed alone (an OOM killer, a scheduler's kill -9): its ranks go with it
// instead of training on unsupervised, where no launcher can stop or restart them.
TEST(LaunchTest, ALauncherKilledAloneTakesItsRanksWithIt) {
  TempDir dir;
  const std::string log = dir / "log";
  const pid_t launcher =
      ctrain::testing::spawn_command(launch(2, "sh -c 'echo $$ > " + (dir / "pid") + "$RANK; exec sleep 600'"), log);
  auto rank_pid = [&](int r) { return std::atoi(ctrain::testing::read_text(dir / ("pid" + std::to_string(r))).c_str()); };
  auto alive = [](pid_t pid) {  // exists and has not ended (a zombie waits for init to reap it)
    const std::string stat = ctrain::testing::read_text("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
  };
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return rank_pid(0) > 0 && rank_pid(1) > 0; }, 60))
      << ctrain::testing::read_text(log);
  ASSERT_TRUE(alive(rank_pid(0)) && alive(rank_pid(1)));
  ::kill(launcher, SIGKILL);
  EXPECT_EQ(ctrain::testing::wait_exit(launcher), 128 + SIGKILL);
  EXPECT_TRUE(ctrain::testing::poll_until([&] { return !alive(rank_pid(0)) && !alive(rank_pid(1)); }, 10))
      << "ranks outlived their launcher";
  for (int r = 0; r < 2; ++r) {
    if (alive(rank_pid(r))) ::kill(rank_pid(r), SIGKILL);  // leave nothing behind
  }
}

TEST(LaunchTest, UsageErrors) {
  EXPECT_EQ(run_command(bin("ctrain-launch") + " --nproc-per-node 2").exit_code, 2);
  EXPECT_EQ(run_command(bin("ctrain-launch") + " --nproc-per-node 0 true").exit_code, 2);
  EXPECT_EQ(run_command(bin("ctrain-launch") + " --nnodes 2 --node-rank 2 true").exit_code, 2);
  const auto r = run_command(bin("ctrain-launch") + " --nproc-per-node 1 /no/such/program");
  EXPECT_EQ(r.exit_code, 127) << r.output;
  EXPECT_NE(r.output.find("/no/such/program"), std::string::npos);
}

class DistributedMnistTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  static std::string mnist(const std::string& args) {
    // On the CPU (Gloo) wherever a GPU exists too; the CUDA cases below say their device.
    return mnist_on_data("--learning-rate 0.05 --momentum 0.5 " + args);
  }
  static std::string mnist_cpu(const std::string& args) { return mnist("--device cpu " + args); }
};

TEST_F(DistributedMnistTest, SameGlobalBatchSameWeights) {
  // 1 x 64 == 2 ranks x 32 == 2 ranks x 16 x accumulate 2 == 1 x 32 x accumulate 2,
  // up to the order of float reductions.
  auto r = run_command(mnist_cpu("--epochs 2 --batch-size 64 --output-dir " + (out_ / "one")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(launch(2, mnist_cpu("--epochs 2 --batch-size 32 --output-dir " + (out_ / "two"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 0] distributed: rank 0/2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("global batch 64"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("[rank 1] 0 -- Training"), std::string::npos) << "only rank 0 reports";
  r = run_command(launch(2, mnist_cpu("--epochs 2 --batch-size 16 --accumulate 2 --output-dir " + (out_ / "acc2"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist_cpu("--epochs 2 --batch-size 32 --accumulate 2 --output-dir " + (out_ / "acc1")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto one = ctrain::testing::mlp_params(out_ / "one/model.pt");
  EXPECT_LT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "two/model.pt")), 1e-5);
  EXPECT_LT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "acc2/model.pt")), 1e-5);
  EXPECT_LT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "acc1/model.pt")), 1e-5);
  // A different global batch really differs (the comparisons above can fail).
  r = run_command(mnist_cpu("--epochs 2 --batch-size 32 --output-dir " + (out_ / "b32")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "b32/model.pt")), 1e-3);
}

TEST_F(DistributedMnistTest, Mpirun) {
  if (run_command("command -v mpirun").exit_code != 0) GTEST_SKIP() << "mpirun not installed";
  const auto r = run_command(
      "mpirun --allow-run-as-root --oversubscribe -np 2 -x MASTER_PORT=" +
      std::to_string(free_port()) + " " +
      mnist_cpu("--epochs 1 --batch-size 32 --output-dir " + (out_ / "mpi")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("OMPI_COMM_WORLD_RANK (Open MPI)"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "mpi/model.pt"));
}

// On a GPU node (skipped elsewhere): two ranks on one GPU reduce CUDA tensors through Gloo and
// end where one process with the whole batch ends; NCCL runs at world size 1 (one GPU cannot
// hold two NCCL ranks, which ctrain refuses by name).
TEST_F(DistributedMnistTest, GlooOnCudaTensorsAndNcclAtWorldSizeOne) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  auto r = run_command(mnist("--device cuda --epochs 2 --batch-size 64 --output-dir " + (out_ / "one")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(launch(2, mnist("--device cuda --dist-backend gloo --epochs 2 --batch-size 32 --output-dir " +
                                  (out_ / "two"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gloo over"), std::string::npos) << r.output;
  const auto one = ctrain::testing::mlp_params(out_ / "one/model.pt");
  EXPECT_LT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "two/model.pt")), 1e-5);
  r = run_command(launch(1, mnist("--device cuda --dist-backend nccl --epochs 2 --batch-size 64 --output-dir " +
                                  (out_ / "nccl"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("nccl"), std::string::npos) << r.output;
  EXPECT_LT(max_abs_diff(one, ctrain::testing::mlp_params(out_ / "nccl/model.pt")), 1e-5);
  if (torch::cuda::device_count() == 1) {
    r = run_command(launch(2, mnist("--device cuda --dist-backend nccl --epochs 1 --output-dir " + (out_ / "x"))));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("2 ranks on this node but 1 GPU"), std::string::npos) << r.output;
  }
}

}  // namespace
