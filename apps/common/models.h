#pragma once
// Loading a model from the (validated) spec every checkpoint carries (models::build_model), and
// the trainers' final ONNX step. Header-only, included by one translation unit per app.
#include <torch/torch.h>

#include <cstdio>

#include "core/error.h"
#include "engine/checkpoint.h"
#include "engine/model.h"
#include "models/model.h"
#include "models/spec.h"
#include "tracking/report.h"

#include <filesystem>
#include "export/onnx.h"  // onnx_none.cpp where this ctrain has no libonnx

namespace ctrain::apps {

// The validated spec of a ctrain model.pt or checkpoint (checksum verified); throws
// ctrain::Error naming `path` and the bad field.
inline models::ModelSpec read_model_spec(const std::string& path) {
  return models::ModelSpec::from_json(engine::checkpoint_peek(path).spec, path + ": model spec");
}

// A trained model from a ctrain model.pt or checkpoint (checksum and spec verified), on the CPU.
inline engine::Model load_model(const std::string& path) {
  engine::Model model = models::build_model(read_model_spec(path));
  engine::checkpoint_load(path, *model.module, nullptr);
  return model;
}

// Exports `model` to `onnx_path` (onnx::checker and shape inference pass first) and compares
// the file's outputs with LibTorch's on `sample` (a batch of real inputs) where an ONNX
// runtime is built in. Throws ctrain::Error on failure (also in a build without libonnx).
inline exporter::VerifyResult export_and_verify(engine::Model& model, const std::string& onnx_path,
                                                const torch::Tensor& sample, double tolerance = 1e-4) {
  torch::NoGradGuard no_grad;
  model.module->eval();
  const auto device = model.module->parameters().front().device();
  const torch::Tensor expected = model.forward(sample.to(device)).cpu();
  exporter::export_onnx(*model.module, model.spec.to_json(), onnx_path);
  return exporter::verify_onnx(onnx_path, sample.cpu(), expected, tolerance);
}

// One line for a user: what was verified, or that the runtime comparison was skipped.
inline std::string describe_verification(const std::string& path, const exporter::VerifyResult& v) {
  char buf[512];
  if (v.runtime.empty()) {
    std::snprintf(buf, sizeof(buf),
                  "%s written and checked (onnx checker, shape inference); comparison with LibTorch "
                  "skipped: this ctrain has no ONNX runtime (built without OpenCV dnn)",
                  path.c_str());
  } else {
    std::snprintf(buf, sizeof(buf), "%s verified with %s on %lld inputs, max abs diff %.2e vs LibTorch",
                  path.c_str(), v.runtime.c_str(), static_cast<long long>(v.batch), v.max_abs_diff);
  }
  return buf;
}

// The trainers' last step on rank 0: outputs/model.pt (the final or best weights) exported to
// outputs/model.onnx and verified on `sample`.
inline void export_final_model(engine::Model& model, const std::string& output_dir,
                               const torch::Tensor& sample) {
  if (!exporter::onnx_available()) {
    std::printf("ONNX export skipped: this ctrain was built without libonnx-dev\n");
    return;
  }
  engine::checkpoint_load(output_dir + "/model.pt", *model.module, nullptr);
  const std::string path = output_dir + "/model.onnx";
  std::printf("ONNX: %s\n", describe_verification(path, export_and_verify(model, path, sample)).c_str());
  std::fflush(stdout);
}

// The run's configuration as its model.pt (or newest checkpoint) records it; {} if neither.
inline nlohmann::json run_config(const std::string& run_dir) {
  std::string from = run_dir + "/model.pt";
  if (!std::filesystem::exists(from)) {
    const auto all = engine::checkpoint_list(run_dir + "/checkpoints");
    if (all.empty()) return nlohmann::json::object();
    from = all.back();
  }
  return engine::checkpoint_peek(from).config;
}

// The trainers' very last step on rank 0 (after the ONNX export, which the page lists):
// outputs/report.html. A failure here is a warning: the run itself is done and saved.
inline void write_run_report(const std::string& output_dir) {
  try {
    std::printf("report: %s\n", tracking::write_run_report(output_dir, run_config(output_dir)).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: no report.html: %s\n", e.what());
  }
  std::fflush(stdout);
}

}  // namespace ctrain::apps
