// ctrain-birds as users run it: generated JPEG/PNG folders, real processes, real ranks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../support/fixtures.h"
#include "../support/images.h"
#include "engine/checkpoint.h"

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
    ctrain::testing::write_image_folder(data_->path().string() + "/val", {"chicken", "turkey"}, 8, 2);
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
  EXPECT_GE(meta.best_val_acc, 0.9) << r.output;
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
  if (run_command("/usr/bin/python3 -c 'import torchvision'").exit_code != 0) {
    GTEST_SKIP() << "python3-torchvision is not installed";
  }
  auto r = run_command("/usr/bin/python3 " + std::string(CTRAIN_SOURCE_DIR) +
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

TEST_F(BirdsCliTest, BadInputIsAClearError) {
  auto r = run_command(bin("ctrain-birds") + " --data-dir " + (out_ / "nothing") + " --output-dir " + (out_ / "o"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(out_ / "nothing/train"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o"));
  r = run_command(birds("--arch vgg16 --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--arch"), std::string::npos) << r.output;
}

TEST_F(BirdsCliTest, DataOnlyReportsThroughput) {
  const auto r = run_command(birds("--epochs 1 --data-only"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("data-only epoch 0: 32 images"), std::string::npos) << r.output;
}

}  // namespace
