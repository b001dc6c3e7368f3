#pragma once
// ONNX export from C++ (PyTorch's exporter lives only in Python, pytorch/pytorch#17869) and
// verification of the written file with an independent runtime (OpenCV's cv::dnn, where it is
// built in; the writer itself needs only libonnx).
// export/ reads a trained model; it never trains one and knows models only through their
// spec ({"arch": "mlp"|"resnet18"|"resnet34"|"resnet50", ...}) and parameter names.
#include <torch/torch.h>

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace ctrain::exporter {

// Whether this ctrain writes ONNX: false in a build without libonnx (onnx_none.cpp), where
// export_onnx and verify_onnx throw ctrain::Error saying so.
bool onnx_available();

struct OnnxOptions {
  int64_t opset = 17;
  // Extra metadata_props (class names, input size, mean/std, ctrain version come from the spec).
  std::map<std::string, std::string> metadata;
};

// Writes `module` (described by `spec`) as an ONNX model: input "input" (dynamic batch),
// output "logits", weights as initializers, BatchNormalization in inference form. The model
// passes onnx::checker and shape inference before it is written (atomically) to `path`.
// Throws ctrain::Error naming the layer for anything the exporter cannot express.
void export_onnx(torch::nn::Module& module, const nlohmann::json& spec, const std::string& path,
                 const OnnxOptions& options = {});

struct VerifyResult {
  double max_abs_diff = 0.0;
  int64_t batch = 0;
  std::string runtime;  // what ran the file ("OpenCV dnn"); empty: no ONNX runtime is built
                        // in, and nothing was compared
};

// Runs `input` through the ONNX file with OpenCV's dnn module and compares with `expected`
// (LibTorch's logits for the same input). Throws ctrain::Error when the difference exceeds
// `tolerance` or the file does not load. Without a runtime (a build without OpenCV) it
// compares nothing and returns an empty `runtime`.
VerifyResult verify_onnx(const std::string& path, const torch::Tensor& input,
                         const torch::Tensor& expected, double tolerance = 1e-4);

}  // namespace ctrain::exporter
