#include "serve/handler.h"

#include <cmath>
#include <functional>
#include <limits>

#include "data/decode.h"

namespace ctrain::serve {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Handler::Handler(engine::Model model, torch::Device device)
    : spec_(models::ModelSpec::from_json(model.spec.to_json())), model_(std::move(model)), device_(device) {
  input_shape_ = spec_.input_shape();
  if (spec_.is_mlp()) {
    const int64_t in = spec_.in_features;
    const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(in))));
    side_ = int64_t{side} * side == in ? side : 0;
  } else {
    image_model_ = true;
    eval_tf_.mode = data::Augment::kEval;
    eval_tf_.size = static_cast<int>(spec_.image_size);
    eval_tf_.resize = eval_tf_.size * 256 / 224;  // as ctrain-birds' validation transform
    eval_tf_.mean.assign(spec_.mean.begin(), spec_.mean.end());
    eval_tf_.stdev.assign(spec_.stdev.begin(), spec_.stdev.end());
  }
  classes_ = spec_.classes;
  for (int64_t i = static_cast<int64_t>(classes_.size()); i < spec_.num_classes; ++i) {
    classes_.push_back(std::to_string(i));
  }
  model_.module->to(device_);
  model_.module->eval();
}

nlohmann::json Handler::metadata() const {
  std::vector<int64_t> batch_shape{-1};
  batch_shape.insert(batch_shape.end(), input_shape_.begin(), input_shape_.end());
  std::vector<std::string> types{"application/json"};
  if (image_model_ || side_ > 0) {
    types.push_back("image/jpeg");
    types.push_back("image/png");
  }
  return {{"spec", spec_.to_json()},
          {"classes", classes_},
          {"input_shape", batch_shape},
          {"content_types", types},
          {"device", device_.str()}};
}

torch::Tensor Handler::preprocess_json(const nlohmann::json& data) const {
  std::vector<int64_t> shape;
  for (const nlohmann::json* p = &data; p->is_array(); p = &(*p)[0]) {
    shape.push_back(static_cast<int64_t>(p->size()));
    if (p->empty()) break;
  }
  const bool single = shape == input_shape_;
  const bool batch = shape.size() == input_shape_.size() + 1 && shape[0] >= 1 &&
                     std::equal(input_shape_.begin(), input_shape_.end(), shape.begin() + 1);
  const std::string expected = "[N, " + shape_string(input_shape_).substr(1) + " or " + shape_string(input_shape_);
  if (!single && !batch) {
    throw BadInput("\"data\" has shape " + shape_string(shape) + "; this model takes " + expected);
  }
  auto out = torch::empty(shape, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  // Every nested list must have the size the first one had: JSON does not promise a
  // rectangular array, and a ragged one would silently shift every later value.
  std::function<void(const nlohmann::json&, size_t, const std::string&)> fill =
      [&](const nlohmann::json& node, size_t depth, const std::string& where) {
        if (depth == shape.size()) {
          if (!node.is_number()) throw BadInput(where + " is not a number; this model takes " + expected);
          // 1e300 is a JSON number but inf as a float: the probabilities would be NaN (JSON null).
          // Checked as a double: converting one beyond FLT_MAX to float is undefined.
          const double v = node.get<double>();
          if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
            throw BadInput(where + " is " + node.dump() + ", not finite as a 32-bit float (|x| <= 3.4e38)");
          }
          *dst++ = static_cast<float>(v);
          return;
        }
        if (!node.is_array() || static_cast<int64_t>(node.size()) != shape[depth]) {
          throw BadInput(where + " is not a list of " + std::to_string(shape[depth]) +
                         " (the array is ragged); this model takes " + expected);
        }
        for (size_t i = 0; i < node.size(); ++i) fill(node[i], depth + 1, where + "[" + std::to_string(i) + "]");
      };
  fill(data, 0, "data");
  return single ? out.unsqueeze(0) : out;
}

torch::Tensor Handler::preprocess_image(const std::string& bytes, const std::string& what) const {
  int h = 0, w = 0;
  if (!data::jpeg_size(bytes, &h, &w) && !data::png_size(bytes, &h, &w)) {
    throw BadInput(what + " is not a JPEG or PNG image");
  }
  if (int64_t{h} * w > data::kDefaultMaxImagePixels) {
    throw BadInput(what + " is " + std::to_string(w) + "x" + std::to_string(h) + " pixels, above the " +
                   std::to_string(data::kDefaultMaxImagePixels) + " a decompression-bomb check allows");
  }
  try {
    if (image_model_) {
      auto out = torch::empty({1, 3, eval_tf_.size, eval_tf_.size}, torch::kFloat32);
      std::mt19937_64 rng(0);  // the eval transform draws nothing; the API takes one
      data::decode_and_transform(bytes, what, eval_tf_, data::DecodeOptions{}, rng, out.data_ptr<float>());
      return out;
    }
    if (side_ == 0) throw BadInput("this model's " + std::to_string(input_shape_[0]) + " inputs are not a square image; send JSON");
    data::Image img = data::decode_bytes(bytes, what);
    // PIL's convert('L'): L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16, then the resize.
    for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) {
      const uint8_t l = static_cast<uint8_t>((19595u * img.rgb[i] + 38470u * img.rgb[i + 1] + 7471u * img.rgb[i + 2] + 0x8000u) >> 16);
      img.rgb[i] = img.rgb[i + 1] = img.rgb[i + 2] = l;
    }
    if (img.height != side_ || img.width != side_) img = data::resize_image(img, side_, side_);
    auto out = torch::empty({1, int64_t{side_} * side_}, torch::kFloat32);
    float* dst = out.data_ptr<float>();
    for (int64_t i = 0; i < int64_t{side_} * side_; ++i) dst[i] = img.rgb[3 * i] / 255.0f;
    return out;
  } catch (const BadInput&) {
    throw;
  } catch (const Error& e) {
    throw BadInput(e.what());
  }
}

torch::Tensor Handler::infer(const torch::Tensor& rows) {
  c10::InferenceMode guard;
  const torch::Tensor logits = model_.forward(rows.to(device_, /*non_blocking=*/false));
  return torch::softmax(logits.to(torch::kFloat32), 1).to(torch::kCPU);
}

std::vector<Prediction> Handler::postprocess(const torch::Tensor& probabilities) const {
  const auto best = probabilities.max(1);
  const auto p = std::get<0>(best).contiguous();
  const auto idx = std::get<1>(best).contiguous();
  std::vector<Prediction> out(static_cast<size_t>(probabilities.size(0)));
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].index = idx.data_ptr<int64_t>()[i];
    out[i].label = classes_.at(static_cast<size_t>(out[i].index));
    out[i].probability = p.data_ptr<float>()[i];
  }
  return out;
}

}  // namespace ctrain::serve
