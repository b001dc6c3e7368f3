// The exporter where this ctrain was built without libonnx: it says so, and nothing else. Chosen
// by CMake (export/CMakeLists.txt), so no caller needs an #ifdef.
#include "export/onnx.h"

#include "core/error.h"

namespace ctrain::exporter {
namespace {

[[noreturn]] void refuse() {
  throw Error("this ctrain was built without ONNX export", "install libonnx-dev and libprotobuf-dev, and rebuild");
}

}  // namespace

bool onnx_available() { return false; }

void export_onnx(torch::nn::Module&, const nlohmann::json&, const std::string&, const OnnxOptions&) { refuse(); }

VerifyResult verify_onnx(const std::string&, const torch::Tensor&, const torch::Tensor&, double) { refuse(); }

}  // namespace ctrain::exporter
