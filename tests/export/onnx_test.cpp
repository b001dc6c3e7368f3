#include "export/onnx.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>

#include "../support/fixtures.h"
#include "core/error.h"
#include "core/fs.h"
#include "models/mlp.h"
#include "models/resnet.h"

// Tests that compare outputs need an ONNX runtime (OpenCV dnn); a build without one skips them
// visibly and checks instead that verification says it compared nothing.
#ifdef CTRAIN_TESTS_HAVE_ONNX_RUNTIME
#define REQUIRE_ONNX_RUNTIME() (void)0
#else
#define REQUIRE_ONNX_RUNTIME() GTEST_SKIP() << "no ONNX runtime in this build (OpenCV dnn)"
#endif

namespace ctrain::exporter {
namespace {

using ctrain::testing::run_command;
using ctrain::testing::TempDir;

torch::Tensor logits_of(torch::nn::Module& m, const std::function<torch::Tensor(torch::Tensor)>& f,
                        const torch::Tensor& x) {
  torch::NoGradGuard g;
  m.eval();
  return f(x);
}

TEST(OnnxExportTest, MlpMatchesLibTorchForBatch1And8) {
  REQUIRE_ONNX_RUNTIME();
  TempDir dir;
  torch::manual_seed(1);
  models::Mlp m(models::MlpOptions{});
  const nlohmann::json spec = {{"arch", "mlp"}};
  export_onnx(*m, spec, dir / "mlp.onnx");
  for (int64_t batch : {1, 8}) {
    const torch::Tensor x = torch::rand({batch, 784});
    const auto r = verify_onnx(dir / "mlp.onnx", x, logits_of(*m, [&](auto t) { return m->forward(t); }, x));
    EXPECT_LT(r.max_abs_diff, 1e-4);
    EXPECT_EQ(r.batch, batch);
  }
}

// Non-trivial BatchNorm statistics, so inference-form normalisation is really compared.
void randomise_batchnorm(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& b : m.named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.2, 0.2);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
}

TEST(OnnxExportTest, ResNetsMatchLibTorchWithDynamicBatch) {
  REQUIRE_ONNX_RUNTIME();
  for (const std::string arch : {"resnet18", "resnet50"}) {
    TempDir dir;
    torch::manual_seed(2);
    models::ResNet m(models::ResNetOptions{arch, 5});
    randomise_batchnorm(*m);
    const nlohmann::json spec = {{"arch", arch}, {"num_classes", 5}, {"image_size", 64},
                                 {"classes", {"a", "b", "c", "d", "e"}}, {"mean", {0.485, 0.456, 0.406}}};
    export_onnx(*m, spec, dir / "r.onnx");
    for (int64_t batch : {1, 8}) {
      const torch::Tensor x = torch::randn({batch, 3, 64, 64});
      const auto r = verify_onnx(dir / "r.onnx", x, logits_of(*m, [&](auto t) { return m->forward(t); }, x));
      EXPECT_LT(r.max_abs_diff, 1e-4) << arch << " batch " << batch;
    }
    // Metadata round-trips through the file.
    onnx::ModelProto proto;
    ASSERT_TRUE(proto.ParseFromString(ctrain::read_file(dir / "r.onnx")));
    std::map<std::string, std::string> meta;
    for (const auto& p : proto.metadata_props()) meta[p.key()] = p.value();
    EXPECT_EQ(meta["arch"], arch);
    EXPECT_EQ(nlohmann::json::parse(meta["classes"])[4], "e");
    EXPECT_EQ(meta["input_size"], "[3,64,64]");
    EXPECT_EQ(proto.opset_import(0).version(), 17);
    EXPECT_EQ(proto.graph().input(0).name(), "input");
    EXPECT_EQ(proto.graph().output(0).name(), "logits");
    EXPECT_EQ(proto.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  }
}

TEST(OnnxExportTest, PythonOnnxChecksTheFile) {
  CTRAIN_PYTHON_OR_SKIP(py, "onnx", "python3-onnx");
  TempDir dir;
  models::ResNet m(models::ResNetOptions{"resnet18", 3});
  export_onnx(*m, {{"arch", "resnet18"}, {"image_size", 32}}, dir / "r.onnx");
  const auto r = run_command(py + " -c \"import onnx; m = onnx.load('" + (dir / "r.onnx") +
                             "'); onnx.checker.check_model(m, full_check=True); print('checked', m.graph.output[0].name)\"");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checked logits"), std::string::npos) << r.output;
}

// A model with a layer the exporter has no mapping for.
struct MlpWithExtra : torch::nn::Module {
  MlpWithExtra() {
    register_module("fc1", torch::nn::Linear(4, 3));
    register_module("fc2", torch::nn::Linear(3, 3));
    register_module("fc3", torch::nn::Linear(3, 2));
    register_module("attention", torch::nn::Linear(2, 2));
  }
};

TEST(OnnxExportTest, UnsupportedLayersAreNamed) {
  TempDir dir;
  MlpWithExtra m;
  try {
    export_onnx(m, {{"arch", "mlp"}}, dir / "x.onnx");
    FAIL() << "exported a layer it cannot express";
  } catch (const ctrain::Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention.weight"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "x.onnx"));
  EXPECT_THROW(export_onnx(m, {{"arch", "transformer"}}, dir / "y.onnx"), ctrain::Error);
}

TEST(OnnxExportTest, VerifyFailsWhenOutputsDiffer) {
  REQUIRE_ONNX_RUNTIME();
  TempDir dir;
  models::Mlp m(models::MlpOptions{});
  export_onnx(*m, {{"arch", "mlp"}}, dir / "m.onnx");
  const torch::Tensor x = torch::rand({2, 784});
  const torch::Tensor wrong = logits_of(*m, [&](auto t) { return m->forward(t); }, x) + 0.01;
  EXPECT_THROW(verify_onnx(dir / "m.onnx", x, wrong), ctrain::Error);
}

// onnxruntime (PyPI), the runtime users load the files with, against LibTorch's outputs: the
// MLP and a ResNet-18 with trained-looking BatchNorm, at batch 3; then a file with one flipped
// byte, and outputs that differ, must both be caught.
void write_f32(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous().to(torch::kFloat32);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * 4);
}

TEST(OnnxExportTest, OnnxRuntimeRunsTheFilesAsLibTorchDoes) {
  CTRAIN_PYTHON_OR_SKIP(py, "onnxruntime", "onnxruntime (scripts/install-torch-wheel.sh has it)");
  TempDir dir;
  torch::manual_seed(3);
  models::Mlp mlp(models::MlpOptions{});
  models::ResNet resnet(models::ResNetOptions{"resnet18", 4});
  randomise_batchnorm(*resnet);
  struct Case {
    std::string name;
    torch::nn::Module* module;
    nlohmann::json spec;
    torch::Tensor x;
    std::function<torch::Tensor(torch::Tensor)> forward;
  };
  const std::vector<Case> cases = {
      {"mlp", mlp.get(), {{"arch", "mlp"}}, torch::rand({3, 784}), [&](auto t) { return mlp->forward(t); }},
      {"resnet18", resnet.get(), {{"arch", "resnet18"}, {"image_size", 64}}, torch::randn({3, 3, 64, 64}),
       [&](auto t) { return resnet->forward(t); }}};
  const auto check = [&](const std::string& model, const torch::Tensor& x, const torch::Tensor& expected) {
    write_f32(dir / "x.f32", x);
    write_f32(dir / "y.f32", expected);
    std::string dims;
    for (int64_t d : x.sizes()) dims += " " + std::to_string(d);
    return run_command(py + " " + CTRAIN_SOURCE_DIR + "/tests/export/check_onnx.py " + model + " " + (dir / "x.f32") +
                       " " + (dir / "y.f32") + " 1e-4" + dims);
  };
  for (const Case& c : cases) {
    const std::string path = dir / (c.name + ".onnx");
    export_onnx(*c.module, c.spec, path);
    const torch::Tensor y = logits_of(*c.module, c.forward, c.x);
    auto r = check(path, c.x, y);
    EXPECT_EQ(r.exit_code, 0) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find("max_abs_diff"), std::string::npos) << r.output;
    // Outputs that differ by 0.01 are not "the same model".
    r = check(path, c.x, y + 0.01);
    EXPECT_EQ(r.exit_code, 1) << c.name << ": " << r.output;
    // One flipped byte (the first field's tag: no valid ONNX model any more) is refused.
    std::string bytes = ctrain::read_file(path);
    bytes[0] = static_cast<char>(bytes[0] ^ 0xFF);
    ctrain::write_file_atomic(dir / "flipped.onnx", bytes);
    r = check(dir / "flipped.onnx", c.x, y);
    EXPECT_NE(r.exit_code, 0) << c.name << ": a flipped byte went unnoticed: " << r.output;
  }
}

TEST(OnnxExportTest, WithoutARuntimeVerificationSaysItComparedNothing) {
#ifdef CTRAIN_TESTS_HAVE_ONNX_RUNTIME
  GTEST_SKIP() << "this build has an ONNX runtime (OpenCV dnn): the comparison tests above ran";
#endif
  TempDir dir;
  models::Mlp m(models::MlpOptions{});
  export_onnx(*m, {{"arch", "mlp"}}, dir / "m.onnx");
  const torch::Tensor x = torch::rand({2, 784});
  const auto r = verify_onnx(dir / "m.onnx", x, torch::zeros({2, 10}));
  EXPECT_TRUE(r.runtime.empty());
  EXPECT_EQ(r.batch, 2);
}

}  // namespace
}  // namespace ctrain::exporter
