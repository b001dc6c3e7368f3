#include "models/weights.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/torch_error.h"
#include "core/fs.h"
#include "core/json.h"

namespace ctrain::models {
namespace {

bool starts_with_any(const std::string& s, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes) {
    if (s.rfind(p, 0) == 0) return true;
  }
  return false;
}

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path) {
  const std::string bytes = read_file(path);
  auto fail = [&](const std::string& what) {
    return Error(path + ": not a valid safetensors file: " + what,
                 "convert torchvision weights with safetensors.torch.save_file(model.state_dict(), path)");
  };
  if (bytes.size() < 8) throw fail("shorter than its 8-byte header size");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  if (n > bytes.size() - 8) {
    throw fail("header size " + std::to_string(n) + " exceeds the file (" +
               std::to_string(bytes.size()) + " bytes)");
  }
  nlohmann::json header;
  try {
    header = json_parse(std::string_view(bytes.data() + 8, static_cast<size_t>(n)), "the header");
  } catch (const std::exception& e) {
    throw fail(std::string("header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  static const std::map<std::string, std::pair<torch::Dtype, int>> kDtypes = {
      {"F32", {torch::kFloat32, 4}}, {"F16", {torch::kFloat16, 2}}, {"BF16", {torch::kBFloat16, 2}},
      {"F64", {torch::kFloat64, 8}}, {"I64", {torch::kInt64, 8}},   {"I32", {torch::kInt32, 4}},
      {"U8", {torch::kUInt8, 1}}};
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      const std::string dt = info.at("dtype").get<std::string>();
      auto it = kDtypes.find(dt);
      if (it == kDtypes.end()) throw fail("tensor " + name + " has unsupported dtype " + dt);
      std::vector<int64_t> shape;
      uint64_t numel = 1;
      for (const auto& d : info.at("shape")) {
        const int64_t v = d.get<int64_t>();
        if (v < 0 || v > (int64_t{1} << 40)) throw fail("tensor " + name + " has a bad dimension");
        shape.push_back(v);
        numel *= static_cast<uint64_t>(v);
        if (numel > data_size) throw fail("tensor " + name + " is larger than the file");
      }
      const auto& off = info.at("data_offsets");
      const uint64_t begin = off.at(0).get<uint64_t>(), end = off.at(1).get<uint64_t>();
      if (begin > end || end > data_size || end - begin != numel * it->second.second) {
        throw fail("tensor " + name + " has data offsets [" + std::to_string(begin) + ", " +
                   std::to_string(end) + ") that do not fit its shape or the file");
      }
      out[name] = torch::from_blob(const_cast<char*>(data + begin), shape,
                                   torch::TensorOptions().dtype(it->second.first))
                      .clone();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw fail("entry " + name + ": " + message_of(e));
    }
  }
  return out;
}

ImportReport import_weights(torch::nn::Module& module,
                            const std::map<std::string, torch::Tensor>& tensors,
                            const std::vector<std::string>& reinit_prefixes,
                            const std::string& source) {
  torch::NoGradGuard no_grad;
  ImportReport report;
  std::vector<std::string> problems;
  std::set<std::string> seen;
  auto load = [&](const std::string& name, torch::Tensor& dst) {
    seen.insert(name);
    if (starts_with_any(name, reinit_prefixes)) {
      report.skipped.push_back(name);
      return;
    }
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      problems.push_back("missing " + name);
    } else if (it->second.sizes() != dst.sizes()) {
      problems.push_back(name + " has shape " + shape_str(it->second.sizes()) + " in the file, " +
                         shape_str(dst.sizes()) + " in the model");
    } else {
      dst.copy_(it->second);
      report.loaded.push_back(name);
    }
  };
  for (auto& p : module.named_parameters()) load(p.key(), p.value());
  for (auto& b : module.named_buffers()) load(b.key(), b.value());
  for (const auto& [name, t] : tensors) {
    if (!seen.count(name) && !starts_with_any(name, reinit_prefixes)) {
      problems.push_back("unexpected " + name);
    }
  }
  if (!problems.empty()) {
    std::string list;
    for (size_t i = 0; i < problems.size() && i < 12; ++i) list += "\n    " + problems[i];
    if (problems.size() > 12) list += "\n    ... " + std::to_string(problems.size() - 12) + " more";
    throw Error(source + ": weights do not fit the model (" + std::to_string(problems.size()) +
                    " problems):" + list,
                "check --arch; names must follow torchvision's (conv1.weight, layer1.0.bn1.weight, ...)");
  }
  return report;
}

}  // namespace ctrain::models
