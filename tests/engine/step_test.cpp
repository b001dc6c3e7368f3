// The training step as a unit, and mixed precision: autocast scopes and GradScaler's rules.
#include "engine/step.h"

#include <gtest/gtest.h>

#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "models/mlp.h"

namespace ctrain::engine {
namespace {

models::ModelSpec spec_of(const std::string& arch) {
  models::ModelSpec s;
  s.arch = arch;
  return s;
}

// Autograd only: no hand-written gradients.
Model mlp_model(uint64_t seed) {
  torch::manual_seed(seed);
  models::Mlp m(models::MlpOptions{12, 8, 6, 3});
  return {m.ptr(), [m](const torch::Tensor& x) mutable { return m->forward(x); }, spec_of("mlp"), {}, {}};
}

std::pair<torch::Tensor, torch::Tensor> batch(int64_t n, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return {torch::randn({n, 12}, g), torch::randint(0, 3, {n}, g)};
}

OptimConfig sgd() {
  OptimConfig o;
  o.learning_rate = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 1e-3;
  return o;
}

TEST(TrainStepTest, IsForwardLossBackwardAndOptimizerStep) {
  Model a = mlp_model(1), b = mlp_model(1);
  auto opt_a = make_optimizer(sgd(), a.module->parameters());
  auto opt_b = make_optimizer(sgd(), b.module->parameters());
  TrainStep step(a, *opt_a, nullptr, torch::kCPU, {});
  int64_t correct = 0;
  for (int i = 0; i < 3; ++i) {
    auto [x, y] = batch(16, 10 + i);
    const auto r = step.run(x, y);
    EXPECT_TRUE(r.accepted && r.updated);
    // By hand: the same step.
    zero_grad_to_none(*opt_b);
    const torch::Tensor logits = b.forward(x);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
    EXPECT_TRUE(torch::equal(r.loss, loss.detach())) << "step " << i;
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    loss.backward();
    opt_b->step();
  }
  const auto pa = a.module->parameters(), pb = b.module->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "param " << i;
  EXPECT_EQ(step.correct().item<int64_t>(), correct);
}

// The multi-tensor SGD against LibTorch's own, bitwise, over every option it has: plain,
// momentum with dampening, Nesterov, weight decay; a parameter without a gradient is left
// alone (and gets its momentum buffer on its first gradient); its state saved by one loads
// into the other and continues identically.
void expect_multi_tensor_sgd_is_libtorchs(torch::Device device) {
  const std::vector<torch::optim::SGDOptions> options = {
      torch::optim::SGDOptions(0.1), torch::optim::SGDOptions(0.05).momentum(0.9).dampening(0.1),
      torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(1e-2),
      torch::optim::SGDOptions(0.2).weight_decay(1e-3)};
  for (size_t k = 0; k < options.size(); ++k) {
    Model a = mlp_model(3), b = mlp_model(3);
    a.module->to(device);
    b.module->to(device);
    MultiTensorSgd fast(a.module->parameters(), options[k]);
    torch::optim::SGD ref(b.module->parameters(), options[k]);
    auto train = [&](int step, torch::optim::Optimizer& fo, torch::optim::Optimizer& ro) {
      auto [x_host, y_host] = batch(16, 40 + step);
      const torch::Tensor x = x_host.to(device), y = y_host.to(device);
      for (auto [m, opt] : {std::pair{&a, &fo}, std::pair{&b, &ro}}) {
        zero_grad_to_none(*opt);
        torch::nn::functional::cross_entropy(m->forward(x), y).backward();
        // Step 1: the first layer's weight has no gradient (a frozen layer, an unused head).
        if (step == 1) m->module->parameters()[0].mutable_grad().reset();
        opt->step();
      }
    };
    for (int step = 0; step < 4; ++step) train(step, fast, ref);
    const auto pa = a.module->parameters(), pb = b.module->parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      ASSERT_TRUE(torch::equal(pa[i], pb[i])) << "options " << k << ", param " << i;
    }
    // The state crosses over: LibTorch's SGD loads what MultiTensorSgd saved, and back.
    std::stringstream fast_state, ref_state;
    {
      torch::serialize::OutputArchive out;
      fast.save(out);
      out.save_to(fast_state);
      torch::serialize::OutputArchive out2;
      ref.save(out2);
      out2.save_to(ref_state);
    }
    MultiTensorSgd fast2(a.module->parameters(), options[k]);
    torch::optim::SGD ref2(b.module->parameters(), options[k]);
    torch::serialize::InputArchive in, in2;
    in.load_from(ref_state);
    fast2.load(in);
    in2.load_from(fast_state);
    ref2.load(in2);
    EXPECT_EQ(fast2.state().size(), ref.state().size()) << "options " << k;
    for (int step = 4; step < 6; ++step) train(step, fast2, ref2);
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "options " << k << ", param " << i << " after the state crossed over";
    }
  }
}

TEST(MultiTensorSgdTest, IsLibTorchsSgdBitwiseAndSharesItsState) { expect_multi_tensor_sgd_is_libtorchs(torch::kCPU); }

// On a GPU the multi-tensor kernels run (on the CPU they fall back to one op per tensor).
TEST(MultiTensorSgdTest, OnCudaIsLibTorchsSgdBitwise) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  expect_multi_tensor_sgd_is_libtorchs(torch::Device(torch::kCUDA, 0));
}

// Model::backward (the MLP's gradients by hand) in place of autograd: the same losses, correct
// counts and parameters, bitwise, through SGD with momentum and weight decay, accumulation of
// two micro-batches, a shorter batch and a micro-batch that --on-nan skip drops.
// --accumulate 3 over an epoch of 7 steps: cycles 0-2 and 3-5, then step 6 alone, begun and
// ended by the end of the epoch.
TEST(MicroBatchTest, CyclesOfAccumulateEndEarlyAtTheEpochsEnd) {
  std::string firsts, lasts;
  for (int64_t step = 0; step < 7; ++step) {
    const MicroBatch m{step, 3, 7};
    firsts += m.first() ? '1' : '0';
    lasts += m.last() ? '1' : '0';
  }
  EXPECT_EQ(firsts, "1001001");
  EXPECT_EQ(lasts, "0010011");
  EXPECT_TRUE(MicroBatch{}.first() && MicroBatch{}.last());  // a whole step
}

TEST(TrainStepTest, ManualBackwardIsBitwiseAutograd) {
  torch::manual_seed(4);
  models::Mlp net(models::MlpOptions{12, 8, 6, 3});
  Model manual{net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec_of("mlp"), {}, {}};
  auto grads = std::make_shared<models::MlpManualGrad>(net);
  manual.train_forward = [grads](const torch::Tensor& x) { return grads->forward(x); };
  manual.backward = [grads](const torch::Tensor& g) { grads->backward(g); };
  Model autograd = mlp_model(4);
  auto opt_m = make_optimizer(sgd(), manual.module->parameters());
  auto opt_a = make_optimizer(sgd(), autograd.module->parameters());
  StepOptions o;
  o.accept = [](const torch::Tensor& loss) { return loss.isfinite().item<bool>(); };
  TrainStep step_m(manual, *opt_m, nullptr, torch::kCPU, o), step_a(autograd, *opt_a, nullptr, torch::kCPU, o);
  struct Micro {
    int64_t size;
    MicroBatch at;
    bool nan;
  };
  // Whole steps, cycles of 2 and 3, a NaN step, a short last batch, and a cycle of 3 cut short
  // by the end of its epoch.
  const std::vector<Micro> plan{{16, {0, 1}, false}, {8, {0, 2}, false},     {8, {1, 2}, false},
                                {16, {0, 1}, true},  {5, {0, 1}, false},     {16, {0, 3}, false},
                                {16, {1, 3}, false}, {16, {2, 3}, false},    {16, {3, 3, 5}, false},
                                {16, {4, 3, 5}, false}};
  for (size_t i = 0; i < plan.size(); ++i) {
    auto [x, y] = batch(plan[i].size, 30 + i);
    if (plan[i].nan) x = x * std::numeric_limits<float>::quiet_NaN();
    const auto rm = step_m.run(x, y, plan[i].at);
    const auto ra = step_a.run(x, y, plan[i].at);
    EXPECT_EQ(rm.accepted, ra.accepted) << "micro-batch " << i;
    EXPECT_EQ(rm.updated, ra.updated) << "micro-batch " << i;
    EXPECT_TRUE(torch::equal(rm.loss, ra.loss) || plan[i].nan) << "micro-batch " << i;
    const auto pm = manual.module->parameters(), pa = autograd.module->parameters();
    for (size_t k = 0; k < pa.size(); ++k) {
      EXPECT_TRUE(torch::equal(pm[k], pa[k])) << "param " << k << " after micro-batch " << i;
    }
  }
  EXPECT_EQ(step_m.correct().item<int64_t>(), step_a.correct().item<int64_t>());
  EXPECT_GT(step_m.correct().item<int64_t>(), 0);
}

// --channels-last: the same values in NHWC. Three steps of a small conv net match the
// contiguous run (up to the convolutions' summation order), and the weights, their
// gradients and the step's input buffer stay NHWC.
TEST(TrainStepTest, ChannelsLastTrainsLikeContiguous) {
  auto conv_model = [](bool channels_last) {
    torch::manual_seed(7);
    auto net = torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)),
                                     torch::nn::BatchNorm2d(8), torch::nn::ReLU(),
                                     torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(), torch::nn::Linear(8, 3));
    if (channels_last) to_channels_last(*net.ptr());
    return Model{net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec_of("conv"), {}, {}};
  };
  Model a = conv_model(false), b = conv_model(true);
  const torch::Tensor w = b.module->parameters()[0];
  ASSERT_TRUE(w.is_contiguous(at::MemoryFormat::ChannelsLast));
  ASSERT_FALSE(w.is_contiguous()) << "precondition: NHWC differs from NCHW for this weight";
  auto opt_a = make_optimizer(sgd(), a.module->parameters());
  auto opt_b = make_optimizer(sgd(), b.module->parameters());
  StepOptions cl;
  cl.channels_last = true;
  TrainStep step_a(a, *opt_a, nullptr, torch::kCPU, {}), step_b(b, *opt_b, nullptr, torch::kCPU, cl);
  for (int i = 0; i < 3; ++i) {
    auto g = at::detail::createCPUGenerator(20 + i);
    const torch::Tensor x = torch::randn({6, 3, 10, 10}, g), y = torch::randint(0, 3, {6}, g);
    const auto ra = step_a.run(x, y), rb = step_b.run(x, y);
    EXPECT_NEAR(ra.loss.item<float>(), rb.loss.item<float>(), 1e-5) << "step " << i;
  }
  EXPECT_TRUE(w.is_contiguous(at::MemoryFormat::ChannelsLast)) << "the optimizer kept the layout";
  EXPECT_TRUE(w.grad().is_contiguous(at::MemoryFormat::ChannelsLast));
  const auto pa = a.module->parameters(), pb = b.module->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::allclose(pa[i], pb[i], 1e-4, 1e-5)) << "param " << i;
  EXPECT_FALSE(torch::equal(pa[0], conv_model(false).module->parameters()[0])) << "the steps moved the weights";
}

TEST(TrainStepTest, TwoAccumulatedMicroBatchesEqualTheirConcatenation) {
  Model a = mlp_model(2), b = mlp_model(2);
  auto opt_a = make_optimizer(sgd(), a.module->parameters());
  auto opt_b = make_optimizer(sgd(), b.module->parameters());
  TrainStep acc(a, *opt_a, nullptr, torch::kCPU, {});
  TrainStep whole(b, *opt_b, nullptr, torch::kCPU, {});
  auto [x, y] = batch(16, 3);
  EXPECT_FALSE(acc.run(x.slice(0, 0, 8), y.slice(0, 0, 8), MicroBatch{0, 2}).updated);
  EXPECT_TRUE(acc.run(x.slice(0, 8), y.slice(0, 8), MicroBatch{1, 2}).updated);
  whole.run(x, y);
  const auto pa = a.module->parameters(), pb = b.module->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::allclose(pa[i], pb[i], 1e-5, 1e-6)) << i;
}

TEST(TrainStepTest, RejectedMicroBatchLeavesTheModelAlone) {
  Model a = mlp_model(3);
  auto opt = make_optimizer(sgd(), a.module->parameters());
  StepOptions o;
  o.accept = [](const torch::Tensor& loss) { return loss.isfinite().item<bool>(); };
  TrainStep step(a, *opt, nullptr, torch::kCPU, o);
  std::vector<torch::Tensor> before;
  for (const auto& p : a.module->parameters()) before.push_back(p.detach().clone());
  auto [x, y] = batch(8, 4);
  const auto r = step.run(x * std::numeric_limits<float>::quiet_NaN(), y);
  EXPECT_FALSE(r.accepted);
  EXPECT_FALSE(r.updated);
  const auto ps = a.module->parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(torch::equal(ps[i], before[i]));
    EXPECT_FALSE(ps[i].grad().defined());
  }
  EXPECT_EQ(step.correct().item<int64_t>(), 0);
}

TEST(TrainStepTest, Fp16NeedsCudaAndSaysSo) {
  Model a = mlp_model(4);
  auto opt = make_optimizer(sgd(), a.module->parameters());
  StepOptions o;
  o.amp = Amp::kFp16;
  try {
    TrainStep step(a, *opt, nullptr, torch::kCPU, o);
    FAIL() << "fp16 on CPU was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--amp fp16 needs a CUDA device"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_amp("fp8"), ConfigError);
  EXPECT_EQ(parse_amp("bf16"), Amp::kBf16);
}

TEST(AutocastTest, Bf16OnCpuRunsLinearInBf16AndRestoresTheState) {
  Model a = mlp_model(5);
  auto [x, y] = batch(4, 6);
  EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU));
  {
    AutocastGuard guard(c10::DeviceType::CPU, at::kBFloat16);
    EXPECT_TRUE(autocast_enabled(c10::DeviceType::CPU));
    EXPECT_EQ(a.forward(x).scalar_type(), at::kBFloat16);
  }
  EXPECT_FALSE(autocast_enabled(c10::DeviceType::CPU));
  EXPECT_EQ(a.forward(x).scalar_type(), at::kFloat);
  // A bf16 step trains: the loss is float, and the weights stay float and move.
  auto opt = make_optimizer(sgd(), a.module->parameters());
  StepOptions o;
  o.amp = Amp::kBf16;
  TrainStep step(a, *opt, nullptr, torch::kCPU, o);
  const torch::Tensor before = a.module->parameters()[0].detach().clone();
  const auto r = step.run(x, y);
  EXPECT_EQ(r.loss.scalar_type(), at::kFloat);
  EXPECT_EQ(a.module->parameters()[0].scalar_type(), at::kFloat);
  EXPECT_FALSE(torch::equal(before, a.module->parameters()[0]));
}

// PyTorch's GradScaler: init 65536, x0.5 on an inf/NaN step (which is skipped), x2 after 2000
// consecutive good steps; unscale divides gradients by the scale.
TEST(GradScalerTest, FollowsPyTorchsRules) {
  GradScaler s;
  EXPECT_EQ(s.scale(), 65536.0);
  torch::Tensor w = torch::ones({3}, torch::requires_grad());
  (s.scale_loss(w.sum() * 2)).backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({3}, 2.0 * 65536)));
  EXPECT_FALSE(s.unscale({w}));
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({3}, 2.0)));
  for (int i = 0; i < 1999; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.growth_tracker(), 1999);
  s.update(false);
  EXPECT_EQ(s.scale(), 131072.0);
  EXPECT_EQ(s.growth_tracker(), 0);
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    w.mutable_grad() = torch::tensor({1.0f, bad, 3.0f});
    EXPECT_TRUE(s.unscale({w}));
    const double before = s.scale();
    s.update(true);
    EXPECT_EQ(s.scale(), before * 0.5);
    EXPECT_EQ(s.growth_tracker(), 0);
  }
  // An undefined gradient (an unused parameter) is not a finding.
  torch::Tensor unused = torch::ones({2}, torch::requires_grad());
  EXPECT_FALSE(s.unscale({unused}));
}

// A resumed scaler continues where the saved one stood: one more good step after 1999 grows
// the scale, as it would have without the interruption. States it cannot reach are refused.
TEST(GradScalerTest, RestoredStateContinuesTheCount) {
  GradScaler s;
  s.restore(1024.0, 1999);
  EXPECT_EQ(s.scale(), 1024.0);
  s.update(false);
  EXPECT_EQ(s.scale(), 2048.0);
  EXPECT_EQ(s.growth_tracker(), 0);
  for (const auto& [scale, tracker] : std::vector<std::pair<double, int64_t>>{
           {0.0, 0}, {-1.0, 0}, {std::numeric_limits<double>::infinity(), 0}, {1024.0, -1}, {1024.0, 2000}}) {
    EXPECT_THROW(s.restore(scale, tracker), Error) << scale << " " << tracker;
  }
  EXPECT_EQ(s.scale(), 2048.0);  // a refused state changes nothing
}

}  // namespace
}  // namespace ctrain::engine
