// DDP with real ranks: ddp_worker processes joined by a real Gloo process group on loopback.
#include <gtest/gtest.h>

#include <chrono>

#include "../support/fixtures.h"
#include "models/mlp.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::free_port;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;

// Starts `world` ranks of ddp_worker with torchrun's variables and waits for all of them.
// Returns each rank's exit code; the combined output goes to *output.
std::vector<int> run_ranks(int world, const std::string& args, const TempDir& dir,
                           std::string* output) {
  const int port = free_port();
  std::string cmd;
  for (int r = 0; r < world; ++r) {
    cmd += "(RANK=" + std::to_string(r) + " WORLD_SIZE=" + std::to_string(world) +
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
  const auto b0 = load_tensors(dir / "buffers_rank0.pt");
  const auto b1 = load_tensors(dir / "buffers_rank1.pt");
  for (size_t i = 0; i < b0.size(); ++i) EXPECT_TRUE(torch::equal(b0[i], b1[i])) << i;
  EXPECT_GT(b0[0].abs().sum().item<double>(), 0.0);  // statistics were really updated
}

TEST(DdpTest, KilledRankMakesTheOtherFailNamingTheCollective) {
  TempDir dir;
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  const auto codes = run_ranks(2, "--scenario die --timeout 30", dir, &out);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(codes[0], 1) << out;
  EXPECT_EQ(codes[1], 137) << out;  // SIGKILL
  EXPECT_NE(out.find("allreduce of DDP bucket"), std::string::npos) << out;
  EXPECT_LT(secs, 60) << "rank 0 waited longer than the collective timeout";
}

TEST(DdpTest, HungRankTimesOutNamingTheCollective) {
  TempDir dir;
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 1 sleeps 120 s; rank 0 must give up after its 3 s timeout. Kill the sleeper after.
  const int port = free_port();
  const std::string w = bin("ddp_worker") + " --scenario hang --timeout 3 --out " + dir.path().string();
  const auto r = run_command("(RANK=1 WORLD_SIZE=2 MASTER_PORT=" + std::to_string(port) + " " + w +
                             " & pid=$!; RANK=0 WORLD_SIZE=2 MASTER_PORT=" + std::to_string(port) +
                             " " + w + "; rc=$?; kill -9 $pid; exit $rc)");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("allreduce of DDP bucket"), std::string::npos) << r.output;
  EXPECT_LT(secs, 60) << r.output;
}

}  // namespace
