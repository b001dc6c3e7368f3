#include "models/mlp.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace ctrain::models {
namespace {

TEST(MlpTest, ShapesAndParameterNames) {
  Mlp m(MlpOptions{});
  const auto out = m->forward(torch::rand({5, 784}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{5, 10}));
  std::vector<std::string> names;
  for (const auto& p : m->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                             "fc3.weight", "fc3.bias"}));
  int64_t count = 0;
  for (const auto& p : m->parameters()) count += p.numel();
  EXPECT_EQ(count, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
}

TEST(MlpTest, CustomWidthsAndLogitsNotSoftmaxed) {
  Mlp m(MlpOptions{12, 5, 4, 3});
  const auto out = m->forward(torch::rand({2, 12}) * 100);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3}));
  // Logits: rows need not sum to one (softmax happens only at inference).
  EXPECT_GT((out.sum(1) - 1).abs().max().item<float>(), 1e-3);
}

TEST(MlpTest, SameSeedSameInit) {
  torch::manual_seed(3);
  Mlp a(MlpOptions{});
  torch::manual_seed(3);
  Mlp b(MlpOptions{});
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    EXPECT_TRUE(torch::equal(a->parameters()[i], b->parameters()[i]));
  }
}

TEST(MlpTest, RejectsNonPositiveWidths) {
  EXPECT_THROW(Mlp(MlpOptions{784, 0, 128, 10}), ctrain::ConfigError);
}

}  // namespace
}  // namespace ctrain::models
