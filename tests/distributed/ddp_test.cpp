// DDP with real ranks: ddp_worker processes joined by a real Gloo process group on loopback.
#include <gtest/gtest.h>

#include <chrono>

#include "../support/fixtures.h"
#include "core/error.h"
#include "distributed/process_group.h"
#include "models/mlp.h"

#include <torch/version.h>

#include <cstdlib>

namespace {

using ctrain::testing::bin;
using ctrain::testing::free_port;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;

// Starts `world` ranks of ddp_worker with torchrun's variables and waits for all of them.
// Returns each rank's exit code; the combined output goes to *output.
std::vector<int> run_ranks(int world, const std::string& args, const TempDir& dir,
                           std::string* output, const std::string& env = "") {
  const int port = free_port();
  std::string cmd;
  for (int r = 0; r < world; ++r) {
    cmd += "(" + env + " RANK=" + std::to_string(r) + " WORLD_SIZE=" + std::to_string(world) +
           " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " " +
           bin("ddp_worker") + " " + args + " --out " + dir.path().string() + "; echo $? > " +
           (dir / ("rc" + std::to_string(r))) + ") & ";
  }
  cmd += "wait";
  *output = run_command(cmd).output;
  std::vector<int> codes;
  for (int r = 0; r < world; ++r) {
    std::ifstream f(dir / ("rc" + std::to_string(r)));
    int code = -1;
    f >> code;
    codes.push_back(code);
  }
  return codes;
}

std::vector<torch::Tensor> load_tensors(const std::string& path) {
  std::vector<torch::Tensor> v;
  torch::load(v, path);
  return v;
}

// What one process computes on the whole batch, from rank 0's initial weights.
ctrain::models::Mlp reference_model() {
  torch::manual_seed(100);  // rank 0's seed: DDP broadcasts rank 0's parameters
  return ctrain::models::Mlp(ctrain::models::MlpOptions{8, 6, 5, 3});
}
std::pair<torch::Tensor, torch::Tensor> global_batch(int step) {
  auto g = at::detail::createCPUGenerator(1000 + step);
  return {torch::randn({16, 8}, g), torch::randint(0, 3, {16}, g)};
}

class DdpGradsTest : public ::testing::TestWithParam<double> {};  // param: bucket MB

TEST_P(DdpGradsTest, TwoRanksGiveTheGradientsOfTheConcatenatedBatch) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario grads --bucket-mb " + std::to_string(GetParam()), dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  auto ref = reference_model();
  auto [x, y] = global_batch(0);
  torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
  for (int r = 0; r < 2; ++r) {
    const auto grads = load_tensors(dir / ("grads_rank" + std::to_string(r) + ".pt"));
    ASSERT_EQ(grads.size(), ref->parameters().size());
    for (size_t i = 0; i < grads.size(); ++i) {
      EXPECT_TRUE(torch::allclose(grads[i], ref->parameters()[i].grad(), 1e-5, 1e-6))
          << "rank " << r << " param " << i;
    }
  }
}

// 25 MB: one bucket; 0.0001 MB (100 bytes): nearly a bucket per tensor, launched in order.
INSTANTIATE_TEST_SUITE_P(BucketSizes, DdpGradsTest, ::testing::Values(25.0, 0.0001));

TEST(DdpTest, WeightsStayIdenticalAcrossRanksAndMatchOneProcess) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario steps --bucket-mb 0.0005", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  const auto p0 = load_tensors(dir / "steps_rank0.pt");
  const auto p1 = load_tensors(dir / "steps_rank1.pt");
  auto ref = reference_model();
  torch::optim::SGD opt(ref->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (int step = 0; step < 5; ++step) {
    auto [x, y] = global_batch(step);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
    opt.step();
  }
  for (size_t i = 0; i < p0.size(); ++i) {
    EXPECT_TRUE(torch::equal(p0[i], p1[i])) << "ranks diverged at param " << i;
    EXPECT_TRUE(torch::allclose(p0[i], ref->parameters()[i], 1e-5, 1e-5)) << "param " << i;
  }
}

TEST(DdpTest, BufferSyncGivesEveryRankRankZerosStatistics) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario buffers", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  // [0..2]: running_mean, running_var, num_batches_tracked before the sync; [3..5]: after.
  const auto b0 = load_tensors(dir / "buffers_rank0.pt");
  const auto b1 = load_tensors(dir / "buffers_rank1.pt");
  ASSERT_EQ(b0.size(), 6u);
  ASSERT_EQ(b1.size(), 6u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_FALSE(torch::equal(b0[i], b1[i])) << "the ranks' statistics must differ before the sync: " << i;
    // The source is rank 0: a sync from rank 1 would fail both of these.
    EXPECT_TRUE(torch::equal(b0[3 + i], b0[i])) << "rank 0's own buffer changed: " << i;
    EXPECT_TRUE(torch::equal(b1[3 + i], b0[i])) << "rank 1 did not get rank 0's buffer " << i;
  }
  EXPECT_EQ(b1[5].item<int64_t>(), 1);  // integer buffers too: rank 1 had counted 2 batches
}

TEST(DdpTest, ParameterUnusedOnEveryRankKeepsNoGradAndDoesNotMove) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario unused --bucket-mb 0.0001", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  // [0..2]: used, partial, unused weights after 2 momentum + weight-decay steps; [3]: unused
  // weight after the broadcast; [4..6]: grad defined (1) or not (0).
  const auto r0 = load_tensors(dir / "unused_rank0.pt");
  const auto r1 = load_tensors(dir / "unused_rank1.pt");
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(r0[i], r1[i])) << "ranks diverged at " << i;
  for (const auto* r : {&r0, &r1}) {
    EXPECT_EQ((*r)[4].item<int64_t>(), 1);
    EXPECT_EQ((*r)[5].item<int64_t>(), 1) << "used on rank 0 only: averaged everywhere, as in PyTorch";
    EXPECT_EQ((*r)[6].item<int64_t>(), 0) << "unused everywhere: PyTorch leaves its grad undefined";
    EXPECT_TRUE(torch::equal((*r)[2], (*r)[3])) << "momentum/weight decay moved an unused parameter";
  }
  EXPECT_FALSE(torch::equal(r0[1], torch::zeros_like(r0[1])));
}

TEST(DdpTest, SecondBackwardBeforeTheStepIsAnError) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario twice", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  size_t n = 0;
  for (size_t at = out.find("received a second gradient in one synchronised step"); at != std::string::npos;
       at = out.find("received a second gradient in one synchronised step", at + 1)) {
    ++n;
  }
  EXPECT_EQ(n, 2u) << out;
}

TEST(DdpTest, RanksWithDifferentModelsAreRefusedNamingTheFirstDifference) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario mismatch", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  EXPECT_NE(out.find("rank 1 built another model than rank 0: first difference: rank 0 has fc1.weight [6, 8] Float, "
                     "rank 1 has fc1.weight [7, 8] Float"),
            std::string::npos) << out;
  EXPECT_NE(out.find("rank(s) 1 built another model than rank 0"), std::string::npos) << out;
}

TEST(DdpTest, DivergedReplicaIsFoundByTheChecksum) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario diverge", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  EXPECT_NE(out.find("rank 1 holds other parameter values than rank 0 in the test: fc2.weight"), std::string::npos)
      << out;
  EXPECT_NE(out.find("rank(s) 1 hold other parameter values than rank 0"), std::string::npos) << out;
}

TEST(GlooInterfaceTest, GlooSocketIfnameIsHonouredAndReported) {
  TempDir dir;
  std::string out;
  auto codes = run_ranks(2, "--scenario grads", dir, &out, "GLOO_SOCKET_IFNAME=lo");
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  EXPECT_NE(out.find("transport: gloo over [tcp"), std::string::npos) << out;
  EXPECT_NE(out.find("iface=lo"), std::string::npos) << out;
  // Without it, a single-node job uses loopback by address.
  codes = run_ranks(2, "--scenario grads", dir, &out);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << out;
  EXPECT_NE(out.find("127.0.0.1"), std::string::npos) << out;
}

TEST(GlooInterfaceTest, UnknownInterfaceIsAClearErrorOnEveryRank) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario grads --timeout 20", dir, &out, "GLOO_SOCKET_IFNAME=nosuch0");
  EXPECT_EQ(codes, (std::vector<int>{1, 1})) << out;
  EXPECT_NE(out.find("GLOO_SOCKET_IFNAME names 'nosuch0', which is not a network interface of this host"),
            std::string::npos) << out;
  EXPECT_NE(out.find("this host has: "), std::string::npos) << out;
}

// NCCL's error handling is set from the environment when its process group is built; the
// variables differ by LibTorch version. Checked here without a GPU.
TEST(NcclErrorHandlingTest, BlockingWaitIsSetUnlessTheUserChose) {
  const char* names[] = {"TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                         "NCCL_ASYNC_ERROR_HANDLING"};
  for (const char* n : names) ::unsetenv(n);
  const auto want = ctrain::distributed::nccl_error_handling_env();
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(want[0].first, TORCH_VERSION_MAJOR >= 2 ? "TORCH_NCCL_BLOCKING_WAIT" : "NCCL_BLOCKING_WAIT");
  // The user's choice is read with the rest of the launch environment (resolve_launch).
  auto apply = [] {
    return ctrain::distributed::apply_nccl_error_handling_env(
        ctrain::distributed::resolve_launch({}, ctrain::distributed::process_env()));
  };
  const auto set = apply();
  EXPECT_EQ(set, (std::vector<std::string>{want[0].first + "=1"}));
  ASSERT_NE(std::getenv(want[0].first.c_str()), nullptr);
  EXPECT_STREQ(std::getenv(want[0].first.c_str()), "1");
  // A user's choice, under any of the names, is left alone.
  for (const char* n : names) {
    for (const char* m : names) ::unsetenv(m);
    ::setenv(n, "0", 1);
    EXPECT_TRUE(apply().empty()) << n;
    EXPECT_STREQ(std::getenv(n), "0") << n;
    for (const char* m : names) {
      if (std::string(m) != n) EXPECT_EQ(std::getenv(m), nullptr) << m;
    }
  }
  for (const char* n : names) ::unsetenv(n);
}

// The rank/GPU check takes the GPU count as a parameter: tested here without a GPU.
TEST(GpuCheckTest, NcclWithoutAGpuPerRankIsRefusedInOneLine) {
  using ctrain::distributed::check_gpus;
  auto error_of = [](const ctrain::distributed::LaunchInfo& info, const std::string& device, int gpus) {
    try {
      check_gpus(info, device, gpus);
    } catch (const ctrain::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ctrain::distributed::LaunchInfo two;
  two.world_size = two.local_world_size = 2;
  two.backend = "nccl";
  EXPECT_EQ(error_of(two, "cuda", 1),
            "2 ranks on this node but 1 GPU: NCCL needs a GPU per rank; use --dist-backend gloo or "
            "--nproc-per-node 1");
  EXPECT_EQ(error_of(two, "auto", 1).substr(0, 31), "2 ranks on this node but 1 GPU:");
  EXPECT_EQ(error_of(two, "cuda", 2), "");
  EXPECT_NE(error_of(two, "cuda:1", 2).find("2 ranks on this node all on --device cuda:1"), std::string::npos);
  two.backend = "gloo";  // Gloo shares a GPU between ranks
  EXPECT_EQ(error_of(two, "cuda", 1), "");
  ctrain::distributed::LaunchInfo one;
  EXPECT_EQ(error_of(one, "cuda:3", 2), "--device cuda:3: this node has 2 GPUs (cuda:0 to cuda:1)");
  EXPECT_EQ(error_of(one, "cuda:0", 1), "");
  EXPECT_NE(error_of(one, "cuda:x", 1).find("expected cuda:N"), std::string::npos);
  // No GPU at all: left to device selection, which names --device.
  two.backend = "nccl";
  EXPECT_EQ(error_of(two, "cuda", 0), "");
}

TEST(DdpTest, KilledRankMakesTheOtherFailNamingTheCollective) {
  TempDir dir;
  std::string out;
  const auto codes = run_ranks(2, "--scenario die --timeout 30", dir, &out);
  EXPECT_EQ(codes[0], 1) << out;
  EXPECT_EQ(codes[1], 137) << out;  // SIGKILL
  EXPECT_NE(out.find("allreduce of DDP bucket"), std::string::npos) << out;
  EXPECT_NE(out.find("failed on rank 0"), std::string::npos) << out;
}

}  // namespace
