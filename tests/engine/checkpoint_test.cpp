#include "engine/checkpoint.h"

#include <gtest/gtest.h>

#include "../support/fixtures.h"
#include "core/error.h"
#include "core/fs.h"
#include "models/mlp.h"

namespace ctrain::engine {
namespace {

using ctrain::testing::TempDir;

models::Mlp small_mlp() { return models::Mlp(models::MlpOptions{8, 6, 5, 3}); }

bool same_params(torch::nn::Module& a, torch::nn::Module& b) {
  auto pa = a.parameters(), pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) return false;
  }
  return true;
}

// A few momentum-SGD steps so the optimizer has state worth saving.
void train_a_little(models::Mlp& m, torch::optim::SGD& opt) {
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(m->forward(torch::rand({4, 8})),
                                         torch::tensor({0, 1, 2, 1}))
        .backward();
    opt.step();
  }
}

CheckpointMeta some_meta() {
  CheckpointMeta meta;
  meta.epoch = 4;
  meta.best_val_acc = 0.75;
  meta.best_epoch = 3;
  meta.config = {{"epochs", 9}};
  meta.spec = {{"arch", "mlp"}};
  return meta;
}

TEST(CheckpointTest, RoundTripRestoresModelOptimizerRngAndMeta) {
  TempDir dir;
  torch::manual_seed(1);
  auto m = small_mlp();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  train_a_little(m, opt);
  const std::string path = dir / "c.pt";
  checkpoint_save(path, *m, &opt, some_meta());
  const torch::Tensor expected_draw = torch::rand({3});  // RNG continues from the saved state

  torch::manual_seed(99);
  auto m2 = small_mlp();
  torch::optim::SGD opt2(m2->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  EXPECT_FALSE(same_params(*m, *m2));
  const CheckpointMeta meta = checkpoint_load(path, *m2, &opt2);
  EXPECT_TRUE(same_params(*m, *m2));
  EXPECT_EQ(meta.epoch, 4);
  EXPECT_EQ(meta.best_epoch, 3);
  EXPECT_DOUBLE_EQ(meta.best_val_acc, 0.75);
  EXPECT_EQ(meta.config["epochs"], 9);
  EXPECT_EQ(meta.spec["arch"], "mlp");
  EXPECT_FALSE(meta.loss_scale.has_value());  // not an fp16 run
  EXPECT_TRUE(torch::equal(torch::rand({3}), expected_draw));
  // Momentum buffers came back: one more identical step keeps the two models identical.
  torch::manual_seed(5);
  train_a_little(m, opt);
  torch::manual_seed(5);
  train_a_little(m2, opt2);
  EXPECT_TRUE(same_params(*m, *m2));
}

// An fp16 run's loss scale comes back with its checkpoint, growth count included.
TEST(CheckpointTest, AnFp16RunsLossScaleRoundTrips) {
  TempDir dir;
  auto m = small_mlp();
  CheckpointMeta meta = some_meta();
  meta.loss_scale = LossScale{8192.0, 1234};
  checkpoint_save(dir / "c.pt", *m, nullptr, meta);
  const CheckpointMeta back = checkpoint_peek(dir / "c.pt");
  ASSERT_TRUE(back.loss_scale.has_value());
  EXPECT_EQ(back.loss_scale->scale, 8192.0);
  EXPECT_EQ(back.loss_scale->growth_tracker, 1234);
}

TEST(CheckpointTest, DetectsFlippedByteTruncationAndForeignFiles) {
  TempDir dir;
  auto m = small_mlp();
  const std::string path = dir / "c.pt";
  checkpoint_save(path, *m, nullptr, some_meta());
  const std::string good = read_file(path);

  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x20;
  write_file_atomic(path, flipped);
  try {
    checkpoint_load(path, *m, nullptr);
    FAIL() << "flipped byte not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  write_file_atomic(path, good.substr(0, good.size() - 100));
  EXPECT_THROW(checkpoint_peek(path), Error);
  write_file_atomic(path, "hello");
  EXPECT_THROW(checkpoint_peek(path), Error);
  EXPECT_THROW(checkpoint_peek(dir / "missing.pt"), Error);
}

TEST(CheckpointTest, WrongModelShapeIsAClearError) {
  TempDir dir;
  auto m = small_mlp();
  checkpoint_save(dir / "c.pt", *m, nullptr, some_meta());
  models::Mlp other(models::MlpOptions{8, 7, 5, 3});
  const auto before = other->parameters()[0].clone();
  try {
    checkpoint_load(dir / "c.pt", *other, nullptr);
    FAIL() << "a mis-shaped checkpoint loaded";
  } catch (const Error& e) {
    // Names the tensors at fault, with both shapes.
    EXPECT_NE(std::string(e.what()).find("fc1.weight has shape [6, 8] in the file, [7, 8]"),
              std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fc2.weight"), std::string::npos) << e.what();
  }
  EXPECT_EQ(other->parameters()[0].sizes(), before.sizes());  // the model was not reshaped
}

TEST(CheckpointTest, ListIsSortedByEpoch) {
  TempDir dir;
  auto m = small_mlp();
  for (int e : {10, 2, 1}) checkpoint_save(checkpoint_path(dir.path().string(), e), *m, nullptr, some_meta());
  const auto l = checkpoint_list(dir.path().string());
  ASSERT_EQ(l.size(), 3u);
  EXPECT_NE(l[0].find("epoch-0001.pt"), std::string::npos);
  EXPECT_NE(l[2].find("epoch-0010.pt"), std::string::npos);
}

}  // namespace
}  // namespace ctrain::engine
