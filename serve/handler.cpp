#include "serve/handler.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "core/json.h"
#include "data/decode.h"

namespace ctrain::serve {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

// What a request may hold for a model whose one input has the shape `input`: that, or a batch
// of N >= 1. `expected` says it for messages: "[N, 784] or [784]".
struct InputShapes {
  explicit InputShapes(const std::vector<int64_t>& input)
      : one(input), expected("[N, " + shape_string(input).substr(1) + " or " + shape_string(input)) {}
  bool single(const std::vector<int64_t>& shape) const { return shape == one; }
  bool accepts(const std::vector<int64_t>& shape) const {
    return single(shape) || (shape.size() == one.size() + 1 && shape[0] >= 1 &&
                             std::equal(one.begin(), one.end(), shape.begin() + 1));
  }
  const std::vector<int64_t>& one;
  const std::string expected;
};

}  // namespace

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
  std::vector<std::string> types{"application/json", "application/x-npy"};
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
  const InputShapes shapes(input_shape_);
  const bool single = shapes.single(shape);
  const std::string& expected = shapes.expected;
  if (!shapes.accepts(shape)) {
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

namespace {

// The value of `key` in an .npy header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 784), }: the text after "'key':" up
// to the next top-level comma or closing brace, trimmed. "" when the key is absent.
std::string npy_field(const std::string& header, const std::string& key) {
  const std::string quoted = "'" + key + "'";
  size_t at = header.find(quoted);
  if (at == std::string::npos) return "";
  at = header.find(':', at + quoted.size());
  if (at == std::string::npos) return "";
  int depth = 0;
  size_t end = at + 1;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) break;
  }
  std::string v = header.substr(at + 1, end - at - 1);
  const auto first = v.find_first_not_of(" \t"), last = v.find_last_not_of(" \t");
  return first == std::string::npos ? "" : v.substr(first, last - first + 1);
}

}  // namespace

torch::Tensor Handler::preprocess_npy(const std::string& bytes) const { return npy_to_tensor(bytes, input_shape_); }

torch::Tensor npy_to_tensor(const std::string& bytes, const std::vector<int64_t>& input_shape) {
  const InputShapes shapes(input_shape);
  const std::string& expected = shapes.expected;
  auto bad = [](const std::string& why) { return BadInput("the request body (application/x-npy): " + why); };
  // Header text echoed in a message, at most 64 characters of it: the header is the client's,
  // and up to --max-body-mb long.
  auto quote = [](const std::string& s) { return printable(s.size() > 64 ? s.substr(0, 64) + "..." : s); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) throw bad("unknown .npy format version " + std::to_string(major));
  const auto byte = [&](size_t i) { return static_cast<size_t>(static_cast<unsigned char>(bytes[i])); };
  const size_t prefix = major == 1 ? 10 : 12;
  if (bytes.size() < prefix) throw bad("truncated in its preamble");
  const size_t header_len = major == 1 ? byte(8) | byte(9) << 8 : byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
  if (header_len > bytes.size() - prefix) {
    throw bad("its header says " + std::to_string(header_len) + " bytes, but only " +
              std::to_string(bytes.size() - prefix) + " follow the preamble");
  }
  const std::string header = bytes.substr(prefix, header_len);
  const std::string descr = npy_field(header, "descr");
  size_t itemsize = 0;
  if (descr == "'<f4'") itemsize = 4;
  if (descr == "'<f8'") itemsize = 8;
  if (itemsize == 0) {
    throw bad("dtype " + quote(descr.empty() ? std::string("(none)") : descr) +
              " is not accepted: send little-endian float32 or float64 ('<f4', '<f8')");
  }
  const std::string fortran = npy_field(header, "fortran_order");
  if (fortran != "False") {
    throw bad("fortran_order is " + quote(fortran.empty() ? std::string("missing") : fortran) +
              ": send a C-order array (np.ascontiguousarray)");
  }
  const std::string shape_text = npy_field(header, "shape");
  if (shape_text.size() < 2 || shape_text.front() != '(' || shape_text.back() != ')') {
    throw bad("no shape tuple in its header");
  }
  std::vector<int64_t> shape;
  int64_t count = 1;
  // The element count saturates here, far beyond any body --max-body-mb lets in, so the
  // product cannot overflow and the length check below refuses it.
  constexpr int64_t kTooMany = int64_t{1} << 40;
  {
    // A Python tuple literal, as NumPy writes it and reads it back (ast.literal_eval): "()",
    // "(5,)" or "(2, 784)", a trailing comma allowed; "(5)" is an int, "(2 2)" no tuple at all.
    const std::string dims = shape_text.substr(1, shape_text.size() - 2);
    auto not_sizes = [&] { return bad("shape " + quote(shape_text) + " is not a tuple of sizes"); };
    size_t i = 0;
    auto skip_spaces = [&] { while (i < dims.size() && (dims[i] == ' ' || dims[i] == '\t')) ++i; };
    bool comma_after_last = false;
    skip_spaces();
    while (i < dims.size()) {
      size_t j = i;
      while (j < dims.size() && dims[j] >= '0' && dims[j] <= '9') ++j;
      if (j == i || j - i > 12) throw not_sizes();
      const int64_t d = std::stoll(dims.substr(i, j - i));
      shape.push_back(d);
      if (shape.size() > 64) throw bad("shape " + quote(shape_text) + " has more than 64 dimensions (NumPy's limit)");
      count = d != 0 && count > kTooMany / d ? kTooMany : count * d;
      i = j;
      skip_spaces();
      comma_after_last = i < dims.size();
      if (!comma_after_last) break;
      if (dims[i] != ',') throw not_sizes();
      ++i;
      skip_spaces();
    }
    if (shape.size() == 1 && !comma_after_last) throw not_sizes();
  }
  const bool single = shapes.single(shape);
  if (!shapes.accepts(shape)) throw bad("the array has shape " + shape_string(shape) + "; this model takes " + expected);
  const size_t data_bytes = bytes.size() - prefix - header_len;
  if (count == kTooMany) {
    throw bad("shape " + shape_string(shape) + " holds 2^40 values or more, far more than the " +
              std::to_string(data_bytes) + " bytes that follow the header");
  }
  if (static_cast<uint64_t>(count) * itemsize != data_bytes) {
    throw bad("shape " + shape_string(shape) + " of " + std::to_string(itemsize) + "-byte values needs " +
              std::to_string(static_cast<uint64_t>(count) * itemsize) + " bytes of data, but " +
              std::to_string(data_bytes) + " follow the header");
  }
  // x86-64 and aarch64 are little-endian, as the dtypes accepted: the bytes are the values.
  auto raw = torch::empty({count}, itemsize == 4 ? torch::kFloat32 : torch::kFloat64);
  std::memcpy(raw.data_ptr(), bytes.data() + prefix + header_len, data_bytes);
  torch::Tensor out = raw.to(torch::kFloat32).reshape(shape);
  const torch::Tensor finite = out.isfinite().reshape({-1});
  if (!finite.all().item<bool>()) {
    const int64_t at = finite.logical_not().nonzero()[0][0].item<int64_t>();
    throw BadInput("the array's value " + std::to_string(at) + " (flat index) is " +
                   std::to_string(raw[at].item<double>()) + ", not finite as a 32-bit float (|x| <= 3.4e38)");
  }
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
