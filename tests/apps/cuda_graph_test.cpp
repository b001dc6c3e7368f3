// --cuda-graph: the captured step must train exactly as the eager one. The CUDA cases need a
// GPU (they run on the GPU node, through scripts/node-check.sh, and are skipped elsewhere);
// the CPU case checks what every other machine does with the flag.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../support/fixtures.h"
#include "engine/checkpoint.h"
#include "tracking/report.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::max_abs_diff;
using ctrain::testing::run_command;
using ctrain::tracking::read_jsonl;

// The per-epoch training losses of a run's metrics.jsonl.
std::vector<double> losses(const std::string& dir) {
  std::vector<double> v;
  for (const auto& j : read_jsonl(dir + "/metrics.jsonl")) v.push_back(j.at("train_loss").get<double>());
  return v;
}

void expect_same_trajectory(const std::string& a, const std::string& b, double rel) {
  const auto la = losses(a), lb = losses(b);
  ASSERT_EQ(la.size(), lb.size());
  ASSERT_FALSE(la.empty());
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_NEAR(la[i], lb[i], rel * std::abs(lb[i])) << "epoch " << i << " of " << a << " vs " << b;
  }
}

// Two MNIST runs ended alike: the same losses per epoch, the same final weights.
void expect_same_mnist_run(const std::string& a, const std::string& b) {
  expect_same_trajectory(a, b, 1e-5);
  EXPECT_LT(max_abs_diff(ctrain::testing::mlp_params(a + "/model.pt"), ctrain::testing::mlp_params(b + "/model.pt")),
            1e-5);
}

class CudaGraphTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  static std::string mnist(const std::string& args) {
    return mnist_on_data("--no-onnx --learning-rate 0.05 --momentum 0.9 " + args);
  }
  static std::string birds(const std::string& args) {
    // 3 steps of 4 per epoch plus a short one of 2: both shapes are warmed up, then captured.
    return bin("ctrain-birds") + " --synthetic-data 14 --batch-size 4 --image-size 64 --no-onnx "
           "--checkpoint-every 1 " + args;
  }
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  }
};

// Where the step cannot be captured, the run says why once and trains as without the flag.
TEST(CudaGraphCpuTest, WithoutCudaTheRunSaysWhyAndTrainsEagerly) {
  ctrain::testing::TempDir data, out;
  ctrain::testing::write_synthetic_mnist(data.path().string(), 256, 64);
  const std::string base = bin("ctrain-mnist") + " --data-folder " + data.path().string() +
                           " --device cpu --threads 1 --epochs 2 --no-onnx --output-dir ";
  const auto with = run_command(base + (out / "graph") + " --cuda-graph");
  ASSERT_EQ(with.exit_code, 0) << with.output;
  EXPECT_NE(with.output.find("--cuda-graph: running eagerly: "), std::string::npos) << with.output;
  EXPECT_EQ(with.output.find("captured after"), std::string::npos) << with.output;
  const auto without = run_command(base + (out / "eager"));
  ASSERT_EQ(without.exit_code, 0) << without.output;
  EXPECT_EQ(without.output.find("--cuda-graph"), std::string::npos) << without.output;
  EXPECT_EQ(max_abs_diff(ctrain::testing::mlp_params(out / "graph/model.pt"),
                         ctrain::testing::mlp_params(out / "eager/model.pt")),
            0.0);
}

// MNIST, fp32: the captured run's losses and weights equal the eager run's (cuBLAS's GEMMs
// are deterministic for a fixed shape; the manual backward the eager run takes is bit-equal
// to autograd's). 512 images of batch 64 = 8 full steps: warm-up, capture, 4 replays an epoch.
TEST_F(CudaGraphTest, MnistCapturedTrainsAsEager) {
  const auto eager = run_command(mnist("--device cuda --epochs 3 --output-dir " + (out_ / "eager")));
  ASSERT_EQ(eager.exit_code, 0) << eager.output;
  const auto graph = run_command(mnist("--device cuda --epochs 3 --cuda-graph --output-dir " + (out_ / "graph")));
  ASSERT_EQ(graph.exit_code, 0) << graph.output;
  EXPECT_NE(graph.output.find("captured after 3 eager steps"), std::string::npos) << graph.output;
  expect_same_mnist_run(out_ / "graph", out_ / "eager");
  // And it learned: a graph that replayed stale batches or no update would not follow eager's
  // falling loss this closely, but make the fall itself explicit.
  const auto l = losses(out_ / "graph");
  EXPECT_LT(l.back(), 0.9 * l.front());
}

// --amp fp16 across a resume: the loss scaler continues from the checkpoint (its scale and its
// count of good steps toward the next growth), so the resumed run's last checkpoint holds the
// uninterrupted run's scaler state and its losses follow the same trajectory. Without the saved
// state the second half would start again at 65536 with a count of 0: a different scale, or a
// count 16 steps short.
TEST_F(CudaGraphTest, AnFp16RunResumesAtItsLossScale) {
  const auto whole = run_command(mnist("--device cuda --amp fp16 --epochs 4 --output-dir " + (out_ / "whole")));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto r = run_command(mnist("--device cuda --amp fp16 --epochs 2 --output-dir " + (out_ / "split")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--device cuda --amp fp16 --epochs 4 --resume --output-dir " + (out_ / "split")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fp16 loss scale"), std::string::npos) << r.output;
  const auto a = ctrain::engine::checkpoint_peek(ctrain::engine::checkpoint_list(out_ / "whole/checkpoints").back());
  const auto b = ctrain::engine::checkpoint_peek(ctrain::engine::checkpoint_list(out_ / "split/checkpoints").back());
  ASSERT_TRUE(a.loss_scale && b.loss_scale);
  EXPECT_EQ(b.loss_scale->scale, a.loss_scale->scale);
  EXPECT_EQ(b.loss_scale->growth_tracker, a.loss_scale->growth_tracker);
  expect_same_trajectory(out_ / "split", out_ / "whole", 1e-3);
}

// Captured across a resume: 2 epochs, then 2 more from the checkpoint, end where 4 uninterrupted
// eager epochs end.
TEST_F(CudaGraphTest, MnistCapturedResumesToTheEagerResult) {
  const auto eager = run_command(mnist("--device cuda --epochs 4 --output-dir " + (out_ / "eager")));
  ASSERT_EQ(eager.exit_code, 0) << eager.output;
  auto r = run_command(mnist("--device cuda --epochs 2 --cuda-graph --output-dir " + (out_ / "graph")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--device cuda --epochs 4 --cuda-graph --resume --output-dir " + (out_ / "graph")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  expect_same_mnist_run(out_ / "graph", out_ / "eager");
}

// ResNet-18 with BatchNorm, momentum, a learning rate that StepLR changes every epoch (the
// graphs are captured again) and a short last batch (a second shape), fp32 and bf16.
TEST_F(CudaGraphTest, ResnetCapturedFollowsTheScheduleAsEager) {
  for (const std::string amp : {"off", "bf16"}) {
    const std::string args = "--device cuda --epochs 4 --step-size 1 --gamma 0.5 --amp " + amp;
    const auto eager = run_command(birds(args + " --output-dir " + (out_ / ("eager-" + amp))));
    ASSERT_EQ(eager.exit_code, 0) << eager.output;
    const auto graph = run_command(birds(args + " --cuda-graph --output-dir " + (out_ / ("graph-" + amp))));
    ASSERT_EQ(graph.exit_code, 0) << graph.output;
    EXPECT_NE(graph.output.find("captured after 3 eager steps"), std::string::npos) << graph.output;
    // cuDNN may pick other algorithms (and TF32) in another process: close, not bit-equal.
    expect_same_trajectory(out_ / ("graph-" + amp), out_ / ("eager-" + amp), amp == "off" ? 1e-2 : 3e-2);
    // The synthetic batch is the same every step: the loss must fall well below its start.
    const auto l = losses(out_ / ("graph-" + amp));
    EXPECT_LT(l.back(), 0.8 * l.front()) << amp;
    const auto lr = read_jsonl(out_ / ("graph-" + amp) + "/metrics.jsonl");
    ASSERT_EQ(lr.size(), 4u);
    EXPECT_NEAR(lr[3].at("lr").get<double>(), lr[0].at("lr").get<double>() / 8, 1e-12);
  }
}

}  // namespace
