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

// The hand-written backward against autograd's: bitwise, for the reference widths and a small
// net, through a batch-size change (buffers reallocated) and accumulation into a defined .grad.
TEST(MlpManualGradTest, GradientsAreBitwiseAutogradsOnes) {
  for (const MlpOptions& o : {MlpOptions{}, MlpOptions{12, 8, 6, 3}}) {
    torch::manual_seed(5);
    Mlp reference(o);
    torch::manual_seed(5);
    Mlp manual(o);
    MlpManualGrad grads(manual);
    auto g = at::detail::createCPUGenerator(9);
    for (const int64_t batch : {64, 32, 64}) {
      const torch::Tensor x = torch::rand({batch, o.in_features}, g);
      const torch::Tensor y = torch::randint(0, o.num_classes, {batch}, g);
      // Twice per batch: the second backward adds to the .grad the first one set.
      for (int pass = 0; pass < 2; ++pass) {
        torch::nn::functional::cross_entropy(reference->forward(x), y).backward();
        const torch::Tensor logits = grads.forward(x);
        EXPECT_TRUE(torch::equal(logits, reference->forward(x).detach()));
        torch::Tensor l = logits.detach().requires_grad_();
        torch::nn::functional::cross_entropy(l, y).backward();
        grads.backward(l.grad());
        const auto pr = reference->named_parameters(), pm = manual->named_parameters();
        for (size_t i = 0; i < pr.size(); ++i) {
          ASSERT_TRUE(pm[i].value().grad().defined()) << pr[i].key();
          EXPECT_TRUE(torch::equal(pm[i].value().grad(), pr[i].value().grad()))
              << pr[i].key() << ", batch " << batch << ", pass " << pass << ", max diff "
              << (pm[i].value().grad() - pr[i].value().grad()).abs().max().item<float>();
        }
      }
      for (auto& p : reference->parameters()) p.mutable_grad().reset();
      for (auto& p : manual->parameters()) p.mutable_grad().reset();
    }
  }
}

TEST(MlpTest, RejectsNonPositiveWidths) {
  EXPECT_THROW(Mlp(MlpOptions{784, 0, 128, 10}), ctrain::ConfigError);
}

}  // namespace
}  // namespace ctrain::models
