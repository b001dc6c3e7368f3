#include "data/sampler.h"

#include <gtest/gtest.h>

#include <set>

namespace ctrain::data {
namespace {

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(ShardSamplerTest, ShardsAreDisjointCoveringAndEqualLength) {
  for (int64_t n : {1, 7, 10, 101}) {
    for (int64_t world : {1, 2, 3, 4}) {
      std::multiset<int64_t> all;
      int64_t len = -1;
      for (int64_t r = 0; r < world; ++r) {
        const auto idx = to_vec(ShardSampler(n, r, world, 5, true).indices(3));
        if (len < 0) len = static_cast<int64_t>(idx.size());
        EXPECT_EQ(static_cast<int64_t>(idx.size()), len) << "n=" << n << " world=" << world;
        all.insert(idx.begin(), idx.end());
      }
      EXPECT_EQ(len, (n + world - 1) / world) << "n=" << n << " world=" << world;
      // Every index appears; the padding (len*world - n entries) wraps around the order as
      // DistributedSampler's does, so counts differ by at most one: each index appears
      // floor or ceil of len*world/n times, and never outside [0, n).
      const int64_t total = len * world, lo = total / n, hi = (total + n - 1) / n;
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_GE(static_cast<int64_t>(all.count(i)), lo) << "n=" << n << " world=" << world << " i=" << i;
        EXPECT_LE(static_cast<int64_t>(all.count(i)), hi) << "n=" << n << " world=" << world << " i=" << i;
      }
      EXPECT_GE(*all.begin(), 0);
      EXPECT_LT(*all.rbegin(), n);
    }
  }
}

TEST(ShardSamplerTest, OrderDependsOnSeedAndEpochOnly) {
  const ShardSampler a(1000, 0, 1, 7, true), b(1000, 0, 1, 7, true), c(1000, 0, 1, 8, true);
  EXPECT_TRUE(torch::equal(a.indices(2), b.indices(2)));
  EXPECT_FALSE(torch::equal(a.indices(2), a.indices(3)));
  EXPECT_FALSE(torch::equal(a.indices(2), c.indices(2)));
  // Drawing from the global RNG in between must not change the order.
  torch::rand({100});
  EXPECT_TRUE(torch::equal(a.indices(2), b.indices(2)));
}

TEST(ShardSamplerTest, NoShuffleIsIdentity) {
  EXPECT_EQ(to_vec(ShardSampler(5, 0, 1, 1, false).indices(9)),
            (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(ShardSamplerTest, RejectsBadRank) {
  EXPECT_ANY_THROW(ShardSampler(10, 2, 2, 0, true));
  EXPECT_ANY_THROW(ShardSampler(0, 0, 1, 0, true));
}

TEST(TensorBatchSourceTest, TwoRanksOfHalfBatchCoverTheGlobalBatch) {
  const int64_t n = 200;
  const torch::Tensor x = torch::arange(n, torch::kFloat32).unsqueeze(1);
  const torch::Tensor y = torch::arange(n, torch::kInt64);
  TensorBatchSource one(x, y, 64, ShardSampler(n, 0, 1, 3, true));
  TensorBatchSource r0(x, y, 32, ShardSampler(n, 0, 2, 3, true));
  TensorBatchSource r1(x, y, 32, ShardSampler(n, 1, 2, 3, true));
  one.start_epoch(4);
  r0.start_epoch(4);
  r1.start_epoch(4);
  EXPECT_EQ(one.batches_per_epoch(), 4);
  EXPECT_EQ(r0.batches_per_epoch(), 4);
  int64_t steps = 0;
  while (auto b = one.next()) {
    auto b0 = r0.next(), b1 = r1.next();
    ASSERT_TRUE(b0 && b1);
    const auto g = to_vec(b->target);
    std::set<int64_t> global(g.begin(), g.end());
    std::set<int64_t> split;
    for (auto v : to_vec(b0->target)) split.insert(v);
    for (auto v : to_vec(b1->target)) split.insert(v);
    EXPECT_EQ(global, split) << "step " << steps;
    EXPECT_TRUE(torch::equal(b->input.squeeze(1).to(torch::kInt64), b->target));
    ++steps;
  }
  EXPECT_EQ(steps, 4);
  EXPECT_FALSE(r0.next().has_value());
}

// On a GPU (the node), the dataset lives on the device and batches are gathered there: the
// same batches, in the same order, as on the host, already on the device.
TEST(TensorBatchSourceTest, OnCudaGathersTheHostsBatchesOnTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  const int64_t n = 300;
  const torch::Tensor x = torch::randn({n, 7});
  const torch::Tensor y = torch::randint(0, 10, {n}, torch::kInt64);
  TensorBatchSource host(x, y, 64, ShardSampler(n, 1, 2, 5, true));
  TensorBatchSource gpu(x, y, 64, ShardSampler(n, 1, 2, 5, true), torch::Device(torch::kCUDA, 0));
  for (int64_t epoch : {0, 3}) {
    host.start_epoch(epoch);
    gpu.start_epoch(epoch);
    int64_t steps = 0;
    while (auto h = host.next()) {
      auto g = gpu.next();
      ASSERT_TRUE(g.has_value());
      EXPECT_TRUE(g->input.is_cuda() && g->target.is_cuda());
      EXPECT_TRUE(torch::equal(g->input.cpu(), h->input)) << "epoch " << epoch << " step " << steps;
      EXPECT_TRUE(torch::equal(g->target.cpu(), h->target)) << "epoch " << epoch << " step " << steps;
      ++steps;
    }
    EXPECT_FALSE(gpu.next().has_value());
    EXPECT_EQ(steps, host.batches_per_epoch());
  }
}

}  // namespace
}  // namespace ctrain::data
