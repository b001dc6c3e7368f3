// verify_onnx with OpenCV's dnn: an ONNX runtime independent of LibTorch. Compiled only when
// OpenCV's dnn module is built in (CTRAIN_WITH_OPENCV); verify_none.cpp stands in otherwise.
#include <opencv2/dnn.hpp>

#include "core/error.h"
#include "export/onnx.h"

namespace ctrain::exporter {

VerifyResult verify_onnx(const std::string& path, const torch::Tensor& input,
                         const torch::Tensor& expected, double tolerance) {
  cv::dnn::Net net;
  try {
    net = cv::dnn::readNetFromONNX(path);
  } catch (const cv::Exception& e) {
    throw Error(path + ": OpenCV's dnn cannot load the ONNX model: " + e.what());
  }
  const torch::Tensor x = input.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<int> dims(x.sizes().begin(), x.sizes().end());
  cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F, x.data_ptr<float>());
  net.setInput(blob, "input");
  cv::Mat out = net.forward();
  const torch::Tensor want = expected.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  if (static_cast<int64_t>(out.total()) != want.numel()) {
    throw Error(path + ": OpenCV's dnn returned " + std::to_string(out.total()) + " values, expected " +
                std::to_string(want.numel()));
  }
  const torch::Tensor got = torch::from_blob(out.ptr<float>(), want.sizes(), torch::kFloat32).clone();
  VerifyResult r;
  r.runtime = "OpenCV dnn";
  r.batch = x.size(0);
  r.max_abs_diff = (got - want).abs().max().item<double>();
  if (!(r.max_abs_diff <= tolerance)) {
    throw Error(path + ": ONNX output differs from LibTorch's by " + std::to_string(r.max_abs_diff) +
                " (tolerance " + std::to_string(tolerance) + ")");
  }
  return r;
}

}  // namespace ctrain::exporter
