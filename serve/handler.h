#pragma once
// A model behind the scoring service and ctrain-score, in TorchServe's handler shape:
// preprocess (JSON tensor or image bytes -> input rows) -> inference (a batch of rows ->
// class probabilities) -> postprocess (probabilities -> {"label", "probability"}).
// The handler knows models only through the spec their checkpoint carries (validated:
// models::ModelSpec).
#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/image_folder.h"
#include "engine/model.h"
#include "models/spec.h"

namespace ctrain::serve {

// A request the model cannot take (wrong shape, not numbers, undecodable image): HTTP 400.
class BadInput : public Error {
 public:
  using Error::Error;
};

struct Prediction {
  int64_t index = 0;
  std::string label;
  double probability = 0.0;
};

class Handler {
 public:
  // `model` holds trained weights (apps/common/models.h load_model); it is moved to `device`
  // and put in eval mode. Throws ctrain::Error naming the field for a spec that
  // models::ModelSpec::from_json refuses.
  Handler(engine::Model model, torch::Device device);

  // One input's shape: {784} for the MNIST DNN, {3, 224, 224} for a ResNet.
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  const std::vector<std::string>& classes() const { return classes_; }
  const models::ModelSpec& model_spec() const { return spec_; }
  // What GET /metadata answers: spec, classes, input shape, accepted content types.
  nlohmann::json metadata() const;

  // The sample's JSON contract: `data` is one input (nested lists of input_shape()) or a batch
  // ([N] + input_shape()). Returns [N, ...input_shape()] float32 on the CPU; throws BadInput
  // naming the expected and the received shape, or the element (data[0][3]) that is not a
  // number finite as a float (1e300 would become inf, and the probabilities NaN).
  torch::Tensor preprocess_json(const nlohmann::json& data) const;

  // A NumPy .npy file (np.save; `application/x-npy`): a C-order little-endian float32 or
  // float64 array of shape input_shape() or [N] + input_shape(), the JSON contract in binary,
  // so a client sends a ResNet input as 602 KB instead of ~1 MB of text to parse. Returns
  // [N, ...input_shape()] float32 on the CPU; throws BadInput naming what is wrong (the magic,
  // the header, the dtype, Fortran order, the shape, a length that is not the shape's, a value
  // not finite as a float). No library reads .npy in C++ here: the format is a 10-byte
  // preamble and a Python dict literal (numpy/lib/format.py), parsed by hand.
  torch::Tensor preprocess_npy(const std::string& bytes) const;  // npy_to_tensor(bytes, input_shape())

  // Encoded JPEG/PNG bytes through the model's eval transform: for a ResNet, Resize(size*256/224)
  // + CenterCrop(size) + ImageNet normalisation as ctrain-birds evaluates; for the MLP,
  // grayscale (ITU-R 601 luma, as PIL's convert('L')) resized to the square side, /255.
  // Returns [1, ...input_shape()]; throws BadInput naming `what` for bytes it cannot decode.
  torch::Tensor preprocess_image(const std::string& bytes, const std::string& what) const;

  // Rows [N, ...input_shape()] -> softmax probabilities [N, classes] on the CPU. Safe from
  // several threads at once: the module is in eval mode and inference writes no state.
  torch::Tensor infer(const torch::Tensor& rows);

  // Each row's most probable class.
  std::vector<Prediction> postprocess(const torch::Tensor& probabilities) const;

 private:
  models::ModelSpec spec_;
  engine::Model model_;
  torch::Device device_;
  std::vector<int64_t> input_shape_;
  std::vector<std::string> classes_;
  bool image_model_ = false;  // a ResNet (RGB, eval transform) rather than the MLP (gray)
  int side_ = 0;               // the MLP's square image side (28), 0 when not square
  data::ImageTransform eval_tf_;
};

// "[2, 784]": a shape for messages.
std::string shape_string(const std::vector<int64_t>& shape);

// Handler::preprocess_npy for a model whose one input has `input_shape` (fuzz/fuzz_npy.cpp
// calls it without a model).
torch::Tensor npy_to_tensor(const std::string& bytes, const std::vector<int64_t>& input_shape);

}  // namespace ctrain::serve
