// ctrain-mnist as a user runs it: a real process, real files, exit codes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../support/fixtures.h"
#include "apps/common/cli.h"
#include "core/fs.h"
#include "core/torch_error.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"
#include "tracking/report.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

class MnistCliTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  static std::string mnist(const std::string& args) {
    return mnist_on_data("--threads 1 " + args);
  }
};

TEST_F(MnistCliTest, UnknownFlagIsUsageError) {
  const auto r = run_command(mnist("--no-such-flag 3"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no-such-flag"), std::string::npos) << r.output;
}

TEST_F(MnistCliTest, WrongTypeAndOutOfRangeAreUsageErrors) {
  auto r = run_command(mnist("--epochs abc"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run_command(mnist("--epochs 0 --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--epochs"), std::string::npos) << r.output;
  r = run_command(mnist("--learning-rate -1 --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--learning-rate"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o"));
}

TEST_F(MnistCliTest, MissingDataFolderFailsBeforeTouchingOutputs) {
  const auto r = run_command(bin("ctrain-mnist") + " --data-folder " + (out_ / "nodata") +
                             " --output-dir " + (out_ / "o"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(out_ / "nodata"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o"));
}

// A c10::Error as LibTorch throws it, with its backtrace (its constructors differ between
// LibTorch 1.13 and 2.x; TORCH_CHECK is the same in both).
static c10::Error torch_error(const std::string& msg) {
  try {
    TORCH_CHECK(false, msg);
  } catch (const c10::Error& e) {
    return e;
  }
  throw std::logic_error("TORCH_CHECK(false) did not throw");
}

// LibTorch's errors reach users through guarded_main: without the C++ backtrace that
// c10::Error::what() carries.
TEST(GuardedMainTest, LibTorchErrorsArePrintedWithoutTheirBacktrace) {
  const std::string msg = "Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 0";
  const c10::Error error = torch_error(msg);
  ASSERT_NE(std::string(error.what()), msg) << "precondition: what() carries more than the message";
  ::testing::internal::CaptureStderr();
  const int code = ctrain::apps::guarded_main("ctrain-x", [&error] () -> int { throw error; });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
  EXPECT_EQ(err, "ctrain-x: error: " + msg + "\n");
  EXPECT_EQ(ctrain::message_of(torch_error("msg")), "msg");
  EXPECT_EQ(ctrain::message_of(std::runtime_error("plain")), "plain");
}

// A build without OpenCV (a GPU node without C++ OpenCV) still has ctrain-birds: it refuses to
// read images with a reason, naming the file and the build option, and exits 1.
TEST(NoDecoderBuildTest, BirdsRefusesImagesSayingWhy) {
#ifdef CTRAIN_TESTS_HAVE_OPENCV
  GTEST_SKIP() << "this build decodes images with OpenCV (birds_test covers it)";
#endif
  ctrain::testing::TempDir dir;
  for (const char* f : {"train/chicken", "train/turkey", "val/chicken", "val/turkey"}) {
    fs::create_directories(dir / f);
    std::ofstream(dir / (std::string(f) + "/0.jpg")) << "\xff\xd8 not decoded";
  }
  const auto r = run_command(bin("ctrain-birds") + " --data-dir " + dir.path().string() +
                             " --epochs 1 --image-size 32 --no-onnx --output-dir " + (dir / "o"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("0.jpg: this ctrain was built without an image decoder (OpenCV)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("-DCTRAIN_WITH_OPENCV=ON"), std::string::npos) << r.output;
}

// --synthetic-data: ctrain-birds without an image folder (any build, OpenCV or not), as the
// GPU benchmarks run it. NHWC (--channels-last) ends where NCHW does, on the same batches.
TEST(BirdsSyntheticTest, TrainsWithoutAFolderAndChannelsLastMatchesContiguous) {
  ctrain::testing::TempDir dir;
  const std::string base = bin("ctrain-birds") + " --synthetic-data 16 --batch-size 8 --image-size 32 "
                           "--epochs 2 --device cpu --no-onnx --output-dir ";
  auto r = run_command(base + (dir / "nhwc") + " --channels-last");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("16 train / 1 val synthetic images, device cpu, channels-last"), std::string::npos)
      << r.output;
  r = run_command(base + (dir / "nchw") + " --no-channels-last");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("channels-last"), std::string::npos) << r.output;
  EXPECT_EQ(ctrain::tracking::read_jsonl(dir / "nhwc/metrics.jsonl").size(), 2u);
  const auto a = ctrain::engine::checkpoint_tensors(dir / "nhwc/model.pt");
  const auto b = ctrain::engine::checkpoint_tensors(dir / "nchw/model.pt");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(torch::allclose(t.to(torch::kFloat64), b.at(name).to(torch::kFloat64), 1e-3, 1e-4)) << name;
  }
  // Another seed's images train other weights: the comparison above can fail.
  r = run_command(base + (dir / "seed") + " --no-channels-last --seed 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(torch::allclose(ctrain::engine::checkpoint_tensors(dir / "seed/model.pt").at("fc.weight"),
                               b.at("fc.weight"), 1e-3, 1e-4));
  r = run_command(bin("ctrain-birds") + " --epochs 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--data-dir is required"), std::string::npos) << r.output;
  r = run_command(base + (dir / "x") + " --data-dir " + dir.path().string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--data-dir and --synthetic-data are exclusive"), std::string::npos) << r.output;
}

TEST_F(MnistCliTest, HelpExitsZero) {
  const auto r = run_command(bin("ctrain-mnist") + " --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--first-layer-neurons"), std::string::npos);
}

TEST_F(MnistCliTest, UnderscoreSpellingsTrainAndPrintLikeTheSample) {
  const auto r = run_command(mnist("--batch_size 32 --first_layer_neurons 64 --second_layer_neurons 32 "
                                   "--learning_rate 0.1 --epochs 2 --no_onnx --output_dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 -- Training accuracy:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 -- Training accuracy:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("final_acc"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "o/model.pt"));
  EXPECT_TRUE(fs::exists(out_ / "o/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(out_ / "o/model.onnx"));
  const auto meta = ctrain::engine::checkpoint_peek(out_ / "o/model.pt");
  EXPECT_EQ(meta.spec["hidden1"], 64);
  EXPECT_EQ(meta.config["app"]["batch_size"], 32);
}

TEST_F(MnistCliTest, OnnxExportAtTheEndAndFromTheCheckpoint) {
#ifndef CTRAIN_TESTS_HAVE_ONNX
  GTEST_SKIP() << "ONNX export is not built here (see CMake's summary)";
#endif
  ASSERT_TRUE(fs::exists(bin("ctrain-export"))) << "ONNX is built, so ctrain-export must be";
  const auto r = run_command(mnist("--first-layer-neurons 64 --second-layer-neurons 32 --epochs 1 "
                                   "--output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "o/model.onnx"));
#ifdef CTRAIN_TESTS_HAVE_ONNX_RUNTIME
  const std::string verified = " verified with OpenCV dnn on 8 inputs";
#else  // a build without OpenCV dnn (a GPU node) checks the file and says the comparison was skipped
  const std::string verified = " written and checked (onnx checker, shape inference); comparison with LibTorch skipped";
#endif
  EXPECT_NE(r.output.find(verified), std::string::npos) << r.output;
  // ctrain-export rebuilds the model from the checkpoint's spec and verifies batch 1 and 8.
  auto e = run_command(bin("ctrain-export") + " --checkpoint " + (out_ / "o/model.pt") +
                       " --onnx " + (out_ / "o/again.onnx") + " --verify");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("batch 8: " + (out_ / "o/again.onnx") + verified), std::string::npos) << e.output;
  e = run_command(bin("ctrain-export") + " --onnx " + (out_ / "x.onnx"));
  EXPECT_EQ(e.exit_code, 2) << e.output;
  EXPECT_NE(e.output.find("--checkpoint or --weights"), std::string::npos) << e.output;
  e = run_command(bin("ctrain-export") + " --checkpoint " + (out_ / "none.pt") + " --onnx " + (out_ / "x.onnx"));
  EXPECT_EQ(e.exit_code, 1) << e.output;
  EXPECT_NE(e.output.find("none.pt"), std::string::npos) << e.output;
}

// --amp bf16 (LibTorch's CPU autocast) trains to the fp32 run's accuracy; fp16 is refused on
// CPU, naming the flag. (On Fashion-MNIST, 20 epochs: 0.8567 vs 0.8569, README.)
TEST_F(MnistCliTest, Bf16AutocastTrainsLikeFp32AndFp16NeedsCuda) {
  auto final_acc = [](const std::string& out) {
    const size_t at = out.find("final_acc: ");
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 11));
  };
  const auto fp32 = run_command(mnist("--epochs 4 --learning-rate 0.05 --momentum 0.9 --no-onnx --output-dir " + (out_ / "fp32")));
  ASSERT_EQ(fp32.exit_code, 0) << fp32.output;
  const auto bf16 = run_command(mnist("--epochs 4 --learning-rate 0.05 --momentum 0.9 --no-onnx --amp bf16 --output-dir " + (out_ / "bf16")));
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  EXPECT_GT(final_acc(fp32.output), 0.5) << fp32.output;
  EXPECT_NEAR(final_acc(bf16.output), final_acc(fp32.output), 0.03) << bf16.output;
  EXPECT_EQ(ctrain::engine::checkpoint_peek(out_ / "bf16/model.pt").config["amp"], "bf16");
  // Not bit-identical: the forward really ran in bf16.
  EXPECT_NE(ctrain::read_file(out_ / "bf16/model.pt"), ctrain::read_file(out_ / "fp32/model.pt"));
  const auto fp16 = run_command(mnist("--epochs 1 --no-onnx --amp fp16 --device cpu --output-dir " + (out_ / "fp16")));
  EXPECT_EQ(fp16.exit_code, 2) << fp16.output;
  EXPECT_NE(fp16.output.find("--amp fp16 needs a CUDA device"), std::string::npos) << fp16.output;
}

// The accuracy trajectory of the PyTorch script (benchmarks/mnist_peer.py: the same MLP, data
// order, batch and SGD in Python) for the same seed: equal accuracies in every epoch. ctrain
// trains the MLP with its hand-written backward (Model::backward), so this also holds that to
// PyTorch, not only to ctrain's autograd path.
TEST_F(MnistCliTest, TrajectoryEqualsThePyTorchScripts) {
  CTRAIN_PYTHON_OR_SKIP(py, "torch", "python3-torch");
  const auto r = run_command(mnist("--epochs 3 --device cpu --no-onnx --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto peer = run_command(py + " " + CTRAIN_SOURCE_DIR + "/benchmarks/mnist_peer.py --epochs 3 --threads 1 --data-folder " +
                                data_->path().string() + " 2>&1");
  ASSERT_EQ(peer.exit_code, 0) << peer.output;
  std::vector<nlohmann::json> theirs;
  std::istringstream lines(peer.output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] == '{') theirs.push_back(nlohmann::json::parse(line));
  }
  const auto ours = ctrain::tracking::read_jsonl(out_ / "o/metrics.jsonl");
  ASSERT_EQ(ours.size(), 3u);
  ASSERT_EQ(theirs.size(), 3u) << peer.output;
  for (size_t e = 0; e < ours.size(); ++e) {
    EXPECT_EQ(ours[e]["training_acc"].get<double>(), theirs[e]["training_acc"].get<double>()) << "epoch " << e;
    // The script takes its validation mean in float32: equal counts, up to that rounding.
    EXPECT_NEAR(ours[e]["validation_acc"].get<double>(), theirs[e]["validation_acc"].get<double>(), 1e-6) << "epoch " << e;
    // The epoch's mean loss is summed in another order on each side.
    EXPECT_NEAR(ours[e]["train_loss"].get<double>(), theirs[e]["train_loss"].get<double>(),
                1e-5 * theirs[e]["train_loss"].get<double>()) << "epoch " << e;
  }
  EXPECT_GT(ours.back()["validation_acc"].get<double>(), 0.3) << "the run learned something";
}

TEST_F(MnistCliTest, ResumeIsBitIdenticalAcrossProcesses) {
  auto r = run_command(mnist("--epochs 2 --momentum 0.9 --output-dir " + (out_ / "full")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--epochs 1 --momentum 0.9 --output-dir " + (out_ / "split")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--epochs 2 --momentum 0.9 --resume --output-dir " + (out_ / "split")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("0 -- Training"), std::string::npos) << "epoch 0 was re-trained";
  ctrain::models::Mlp a(ctrain::models::MlpOptions{}), b(ctrain::models::MlpOptions{});
  ctrain::engine::checkpoint_load(out_ / "full/model.pt", *a, nullptr);
  ctrain::engine::checkpoint_load(out_ / "split/model.pt", *b, nullptr);
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    EXPECT_TRUE(torch::equal(a->parameters()[i], b->parameters()[i])) << i;
  }
}

TEST_F(MnistCliTest, ResumeFromMissingFileOrOtherModelIsAnError) {
  auto r = run_command(mnist("--epochs 1 --resume-from " + (out_ / "nope.pt") +
                             " --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("nope.pt"), std::string::npos) << r.output;
  r = run_command(mnist("--epochs 1 --first-layer-neurons 16 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--epochs 2 --first-layer-neurons 32 --output-dir " + (out_ / "o2") +
                        " --resume-from " + (out_ / "o/checkpoints/epoch-0000.pt")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("different model"), std::string::npos) << r.output;
  // --resume over another model's checkpoints refuses rather than training over (and
  // pruning) them.
  r = run_command(mnist("--epochs 2 --resume --first-layer-neurons 32 --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("different model"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "o/checkpoints/epoch-0000.pt"));
}

}  // namespace
