// ctrain-birds as users run it: generated JPEG/PNG folders, real processes, real ranks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../support/fixtures.h"
#include "../support/images.h"
#include "data/image_folder.h"
#include "core/fs.h"
#include "engine/checkpoint.h"
#include "models/resnet.h"
#include "models/weights.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::free_port;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

class BirdsCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    ctrain::testing::write_image_folder(data_->path().string() + "/train", {"chicken", "turkey"}, 16, 1);
    // 48 validation images: one image is 2%, so "learned" can be asserted far from chance
    // (0.5) and far from what any one machine's BLAS kernels happen to reach (~0.9).
    ctrain::testing::write_image_folder(data_->path().string() + "/val", {"chicken", "turkey"}, 24, 2);
  }
  static void TearDownTestSuite() { delete data_; }
  static std::string birds(const std::string& args) {
    return bin("ctrain-birds") + " --data-dir " + data_->path().string() +
           " --image-size 64 --batch-size 8 --workers 2 " + args;
  }
  static TempDir* data_;
  TempDir out_;
};
TempDir* BirdsCliTest::data_ = nullptr;

TEST_F(BirdsCliTest, LearnsAndWritesTheTutorialsOutputs) {
  const auto r = run_command(birds("--epochs 4 --learning-rate 0.01 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s : {"Epoch 0/3", "----------", "train Loss:", "val Loss:", "Training complete in",
                        "Best val Acc:"}) {
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  }
  const auto meta = ctrain::engine::checkpoint_peek(out_ / "o/model.pt");
  // Under chance (0.5) 36 of 48 right has probability ~3e-4; the trajectory itself depends on
  // the CPU's BLAS kernels, so the margin to what this machine reaches is wide on purpose.
  EXPECT_GE(meta.best_val_acc, 0.75) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "o/model.onnx"));
  EXPECT_NE(r.output.find("ONNX: "), std::string::npos) << r.output;  // two visibly different classes: chance is 0.5
  EXPECT_EQ(meta.spec["classes"], (std::vector<std::string>{"chicken", "turkey"}));
  EXPECT_EQ(meta.spec["arch"], "resnet18");
  std::ifstream metrics(out_ / "o/metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  const auto j = nlohmann::json::parse(last);
  EXPECT_DOUBLE_EQ(j["momentum"].get<double>(), 0.9);
  EXPECT_TRUE(j.contains("best_val_acc"));
}

TEST_F(BirdsCliTest, PretrainedSafetensorsGetsANewHead) {
  CTRAIN_PYTHON_OR_SKIP(py, "torchvision", "python3-torchvision");
  auto r = run_command(py + " " + std::string(CTRAIN_SOURCE_DIR) +
                       "/tests/models/make_resnet_fixture.py resnet18 1000 " + out_.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(birds("--epochs 1 --freeze-backbone --pretrained " + (out_ / "weights.safetensors") +
                        " --output-dir " + (out_ / "ft")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("new classifier head for 2 classes (the file's has 1000)"), std::string::npos) << r.output;
  // A ctrain checkpoint with the same classes loads whole.
  r = run_command(birds("--epochs 1 --pretrained " + (out_ / "ft/model.pt") + " --output-dir " + (out_ / "ft2")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pretrained: 122 tensors"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("new classifier head"), std::string::npos) << r.output;
  // Wrong architecture: every mismatch is named.
  r = run_command(birds("--epochs 1 --arch resnet50 --pretrained " + (out_ / "weights.safetensors") +
                        " --output-dir " + (out_ / "bad")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("weights do not fit the model"), std::string::npos) << r.output;
}

TEST_F(BirdsCliTest, TwoRanksUnderTheLauncher) {
  const auto r = run_command(bin("ctrain-launch") + " --nproc-per-node 2 --master-port " +
                             std::to_string(free_port()) + " " +
                             birds("--epochs 2 --batch-size 4 --output-dir " + (out_ / "ddp")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 0] distributed: rank 0/2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 0] Best val Acc:"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "ddp/model.pt"));
  EXPECT_TRUE(fs::exists(out_ / "ddp/checkpoints/epoch-0001.pt"));
}

// Two ranks of batch 4 take one step; a single process computes the same step from the same
// weights on the same 8 augmented images, as DDP defines it: each rank's BatchNorm normalises
// its own 4 images, and the gradient is the mean of the two ranks' losses'. The weights must
// agree (as the MLP's DDP test checks for the MLP).
TEST_F(BirdsCliTest, TwoRankStepMatchesOneProcessOnTheConcatenatedBatch) {
  using namespace ctrain;
  const std::string root = out_ / "eight";
  ctrain::testing::write_image_folder(root + "/train", {"chicken", "turkey"}, 4, 7);
  ctrain::testing::write_image_folder(root + "/val", {"chicken", "turkey"}, 2, 8);
  torch::manual_seed(3);
  models::ResNet init(models::ResNetOptions{"resnet18", 2});
  engine::CheckpointMeta meta;
  meta.spec = {{"arch", "resnet18"}, {"num_classes", 2}};
  engine::checkpoint_save(out_ / "init.pt", *init, nullptr, meta);

  const double lr = 0.05;
  const auto r = run_command(bin("ctrain-launch") + " --nproc-per-node 2 --master-port " +
                             std::to_string(free_port()) + " " + bin("ctrain-birds") + " --data-dir " + root +
                             " --image-size 32 --batch-size 4 --workers 0 --epochs 1 --seed 9 --no-onnx"
                             " --learning-rate " + std::to_string(lr) + " --pretrained " + (out_ / "init.pt") +
                             " --output-dir " + (out_ / "ddp"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto got = engine::checkpoint_tensors(out_ / "ddp/model.pt");

  // The reference: rank r's batch is what rank r's loader gives (shard r of 2, seed 9, epoch 0).
  models::ResNet net(models::ResNetOptions{"resnet18", 2});
  models::import_weights(*net, engine::checkpoint_tensors(out_ / "init.pt"), {}, "init.pt");
  net->train();
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(lr).momentum(0.9));
  torch::Tensor loss = torch::zeros({});
  for (int rank = 0; rank < 2; ++rank) {
    data::ImageTransform t;
    t.size = 32;
    data::LoaderOptions o;
    o.batch_size = 4;
    o.workers = 0;
    o.seed = 9;
    data::ImageFolderSource src(data::index_image_folder(root + "/train"), t, data::ShardSampler(8, rank, 2, 9, true), o);
    src.start_epoch(0);
    auto b = src.next();
    ASSERT_TRUE(b.has_value());
    ASSERT_EQ(b->input.size(0), 4);
    loss = loss + torch::nn::functional::cross_entropy(net->forward(b->input), b->target) / 2;
  }
  loss.backward();
  opt.step();
  int compared = 0;
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(got.count(p.key())) << p.key();
    const torch::Tensor before = engine::checkpoint_tensors(out_ / "init.pt").at(p.key());
    EXPECT_TRUE(torch::allclose(got.at(p.key()), p.value(), 1e-4, 1e-5))
        << p.key() << ": max diff " << (got.at(p.key()) - p.value()).abs().max().item<double>()
        << ", moved by " << (p.value() - before).abs().max().item<double>();
    ++compared;
  }
  EXPECT_EQ(compared, 62);
  EXPECT_FALSE(torch::equal(got.at("fc.weight"), engine::checkpoint_tensors(out_ / "init.pt").at("fc.weight")));
}

// Phone photos: portrait JPEGs with EXIF orientation 6, the layout that crashed (SIGSEGV) when
// the decoder rotated them under a crop planned from the stored size.
TEST_F(BirdsCliTest, RotatedPhonePhotosTrainEvaluateAndLoad) {
  const std::string root = out_ / "rotated";
  for (const char* split : {"train", "val"}) {
    for (int c = 0; c < 2; ++c) {
      const std::string dir = root + "/" + split + "/" + (c == 0 ? "chicken" : "turkey");
      fs::create_directories(dir);
      for (int i = 0; i < 3; ++i) {
        std::vector<uchar> buf;
        cv::imencode(".jpg", cv::Mat(1200, 250, CV_8UC3, cv::Scalar(40 + 150 * c, 90, 200 - 150 * c)), buf);
        const int orientation = 5 + (i % 4);
        ctrain::write_file_atomic(dir + "/" + std::to_string(i) + ".jpg",
                                  ctrain::testing::with_exif_orientation(std::string(buf.begin(), buf.end()), orientation));
      }
    }
  }
  const std::string base = bin("ctrain-birds") + " --data-dir " + root + " --image-size 32 --batch-size 2 --workers 1 ";
  auto r = run_command(base + "--num-epochs 1 --no-onnx --output-dir " + (out_ / "rot"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("val Loss:"), std::string::npos) << r.output;
  r = run_command(base + "--epochs 1 --data-only");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("data-only epoch 0: 6 images"), std::string::npos) << r.output;
}

TEST_F(BirdsCliTest, BadInputIsAClearError) {
  auto r = run_command(bin("ctrain-birds") + " --data-dir " + (out_ / "nothing") + " --output-dir " + (out_ / "o"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(out_ / "nothing/train"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o"));
  r = run_command(birds("--arch vgg16 --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--arch"), std::string::npos) << r.output;
}

// SIGTERM during training: the loader's worker threads wind down, the run exits 143 at a step
// boundary, and its last checkpoint still loads.
TEST_F(BirdsCliTest, SigtermStopsWithLoaderWorkersRunning) {
  const std::string out = out_ / "o", log = out_ / "log";
  const pid_t pid = ctrain::testing::spawn_command(birds("--epochs 500 --no-onnx --output-dir " + out), log);
  ASSERT_TRUE(ctrain::testing::poll_until([&] { return ctrain::testing::count_lines(out + "/metrics.jsonl") >= 1; }))
      << ctrain::testing::read_text(log);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(ctrain::testing::wait_exit(pid), 128 + SIGTERM) << ctrain::testing::read_text(log);
  EXPECT_NE(ctrain::testing::read_text(log).find("stopped by SIGTERM"), std::string::npos)
      << ctrain::testing::read_text(log);
  // Its newest checkpoint (older ones are pruned, epoch 0's too if the run got that far) is
  // whole: it reads.
  const auto kept = ctrain::engine::checkpoint_list(out + "/checkpoints");
  ASSERT_FALSE(kept.empty()) << ctrain::testing::read_text(log);
  EXPECT_GE(ctrain::engine::checkpoint_peek(kept.back()).epoch, 0) << kept.back();
}

TEST_F(BirdsCliTest, DataOnlyReportsThroughput) {
  const auto r = run_command(birds("--epochs 1 --data-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("data-only epoch 0: 32 images"), std::string::npos) << r.output;
}

// --decode: the run says once where its images are decoded and why; the GPU pipeline asked
// for where it cannot run is a usage error with the reason, before anything is written.
TEST_F(BirdsCliTest, DecodeChoiceIsSaidAndAnImpossibleOneRefused) {
  auto r = run_command(birds("--epochs 1 --data-only --device cpu"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("input: decoded and augmented on the CPU by 2 worker threads (--decode auto: the device "
                          "is cpu, not CUDA)"),
            std::string::npos)
      << r.output;
  r = run_command(birds("--epochs 1 --data-only --device cpu --decode cpu"));
  EXPECT_NE(r.output.find("(--decode cpu)"), std::string::npos) << r.output;
  r = run_command(birds("--epochs 1 --device cpu --decode gpu --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--decode gpu: "), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o"));
}

}  // namespace
