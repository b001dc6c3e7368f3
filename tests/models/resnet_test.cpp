#include "models/resnet.h"

#include <gtest/gtest.h>

#include <fstream>

#include "../support/fixtures.h"
#include "core/error.h"
#include "models/weights.h"

namespace ctrain::models {
namespace {

using ctrain::testing::run_command;
using ctrain::testing::TempDir;

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(ResNetTest, ParameterCountsMatchTorchvision) {
  // torchvision's published parameter counts for 1000 classes.
  EXPECT_EQ(count_params(*ResNet(ResNetOptions{"resnet18", 1000})), 11689512);
  EXPECT_EQ(count_params(*ResNet(ResNetOptions{"resnet34", 1000})), 21797672);
  EXPECT_EQ(count_params(*ResNet(ResNetOptions{"resnet50", 1000})), 25557032);
}

TEST(ResNetTest, TorchvisionNamesAndShapes) {
  ResNet m(ResNetOptions{"resnet18", 2});
  std::set<std::string> names;
  for (const auto& p : m->named_parameters()) names.insert(p.key());
  for (const auto& b : m->named_buffers()) names.insert(b.key());
  for (const char* n : {"conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.num_batches_tracked",
                        "layer1.0.conv1.weight", "layer1.1.bn2.running_var",
                        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                        "layer4.1.conv2.weight", "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  EXPECT_FALSE(names.count("layer1.0.downsample.0.weight"));  // no downsample where not needed
  m->eval();
  EXPECT_EQ(m->forward(torch::randn({3, 3, 64, 64})).sizes(), (std::vector<int64_t>{3, 2}));
  ResNet r50(ResNetOptions{"resnet50", 7});
  r50->eval();
  EXPECT_EQ(r50->forward(torch::randn({1, 3, 64, 64})).sizes(), (std::vector<int64_t>{1, 7}));
  EXPECT_THROW(ResNet(ResNetOptions{"resnet101", 2}), ctrain::ConfigError);
}

TEST(ResNetTest, NewHeadAndFrozenBackbone) {
  ResNet m(ResNetOptions{"resnet18", 1000});
  m->reset_head(2);
  EXPECT_EQ(m->options().num_classes, 2);
  m->freeze_backbone();
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.value().requires_grad(), p.key().rfind("fc.", 0) == 0) << p.key();
  }
  m->eval();
  EXPECT_EQ(m->forward(torch::randn({1, 3, 32, 32})).sizes(), (std::vector<int64_t>{1, 2}));
}

// The parity test: torchvision (Debian's python3-torchvision) writes weights, an input batch and
// its logits; ctrain loads the weights by name and must produce the same logits.
TEST(ResNetTest, LogitsMatchTorchvision) {
  CTRAIN_PYTHON_OR_SKIP(py, "torchvision", "python3-torchvision");
  for (const std::string arch : {"resnet18", "resnet50"}) {
    TempDir dir;
    const auto r = run_command(py + " " + std::string(CTRAIN_SOURCE_DIR) +
                               "/tests/models/make_resnet_fixture.py " + arch + " 5 " +
                               dir.path().string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ResNet m(ResNetOptions{arch, 5});
    const auto report = import_weights(*m, read_safetensors(dir / "weights.safetensors"), {}, "fixture");
    EXPECT_TRUE(report.skipped.empty());
    m->eval();
    const auto batch = read_safetensors(dir / "batch.safetensors");
    torch::NoGradGuard no_grad;
    const auto logits = m->forward(batch.at("input"));
    const double diff = (logits - batch.at("logits")).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << arch << " max abs diff " << diff;
  }
}

// A hand-built safetensors file with the given header JSON and data bytes.
void write_safetensors(const std::string& path, const std::string& header, const std::string& data) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  std::ofstream(path, std::ios::binary) << s << header << data;
}

TEST(SafetensorsTest, ReadsAndRejectsLyingHeaders) {
  TempDir dir;
  const float vals[3] = {1.5f, -2.0f, 3.25f};
  const std::string data(reinterpret_cast<const char*>(vals), sizeof(vals));
  write_safetensors(dir / "ok.st", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"__metadata__":{"a":"b"}})", data);
  const auto t = read_safetensors(dir / "ok.st");
  ASSERT_EQ(t.count("w"), 1u);
  EXPECT_FLOAT_EQ(t.at("w")[2].item<float>(), 3.25f);
  auto expect_bad = [&](const std::string& header, const std::string& d, const std::string& needle) {
    write_safetensors(dir / "bad.st", header, d);
    try {
      read_safetensors(dir / "bad.st");
      FAIL() << "accepted: " << header;
    } catch (const ctrain::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.st"), std::string::npos) << e.what();
    }
  };
  expect_bad(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data, "offsets");
  expect_bad(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}})", data, "offsets");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,12]}})", data, "larger");
  expect_bad(R"({"w":{"dtype":"Q4","shape":[3],"data_offsets":[0,12]}})", data, "dtype");
  expect_bad(R"({"w": not json)", data, "JSON");
  std::ofstream(dir / "bad.st", std::ios::binary) << std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10);
  EXPECT_THROW(read_safetensors(dir / "bad.st"), ctrain::Error);
}

TEST(ImportWeightsTest, ReportsEveryProblemByNameAndReinitsTheHead) {
  ResNet src(ResNetOptions{"resnet18", 1000});
  std::map<std::string, torch::Tensor> w;
  for (const auto& p : src->named_parameters()) w[p.key()] = p.value().detach();
  for (const auto& b : src->named_buffers()) w[b.key()] = b.value();
  ResNet dst(ResNetOptions{"resnet18", 2});
  // A 1000-class head into a 2-class model: refused unless fc is re-initialised.
  EXPECT_THROW(import_weights(*dst, w, {}, "src"), ctrain::Error);
  const auto report = import_weights(*dst, w, {"fc."}, "src");
  EXPECT_EQ(report.skipped, (std::vector<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_TRUE(torch::equal(dst->named_parameters()["conv1.weight"], w["conv1.weight"]));
  auto broken = w;
  broken.erase("layer3.1.conv2.weight");
  broken["extra.weight"] = torch::zeros({1});
  try {
    import_weights(*dst, broken, {"fc."}, "broken.safetensors");
    FAIL();
  } catch (const ctrain::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing layer3.1.conv2.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("broken.safetensors"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace ctrain::models
