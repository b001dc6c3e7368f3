#include "models/spec.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "models/resnet.h"

namespace ctrain::models {
namespace {

constexpr const char* kHint = "the file was not written by a ctrain trainer, or was altered; retrain or re-export the model";

// A value for a message: JSON text, cut short (a spec field may hold megabytes).
std::string shown(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

class Reader {
 public:
  Reader(const nlohmann::json& spec, const std::string& what) : spec_(spec), what_(what) {}

  [[noreturn]] void fail(const std::string& field, const nlohmann::json& value, const std::string& want) const {
    throw Error(what_ + ": " + field + " is " + shown(value) + "; it must be " + want, kHint);
  }

  bool has(const char* field) const { return spec_.contains(field); }

  // An integer in [lo, hi]; `fallback` when absent and not required.
  int64_t integer(const char* field, int64_t lo, int64_t hi, int64_t fallback, bool required) const {
    const std::string want = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
    if (!has(field)) {
      if (required) throw Error(what_ + ": " + field + " is missing; it must be " + want, kHint);
      return fallback;
    }
    const nlohmann::json& v = spec_[field];
    // Unsigned first: a uint64 above INT64_MAX read as int64 would wrap to a negative value.
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u < static_cast<uint64_t>(lo) || u > static_cast<uint64_t>(hi)) fail(field, v, want);
      return static_cast<int64_t>(u);
    }
    if (!v.is_number_integer()) fail(field, v, want);
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi) fail(field, v, want);
    return i;
  }

  // Exactly three finite numbers, each in [lo, hi].
  std::array<double, 3> triple(const char* field, double lo, double hi, std::array<double, 3> fallback) const {
    if (!has(field)) return fallback;
    const nlohmann::json& v = spec_[field];
    char want[160];
    std::snprintf(want, sizeof(want), "a list of 3 finite numbers (R, G, B) in [%g, %g]", lo, hi);
    if (!v.is_array() || v.size() != 3) fail(field, v, want);
    std::array<double, 3> out{};
    for (size_t i = 0; i < 3; ++i) {
      if (!v[i].is_number()) fail(field, v, want);
      out[i] = v[i].get<double>();
      if (!std::isfinite(out[i]) || out[i] < lo || out[i] > hi) fail(field, v, want);
    }
    return out;
  }

  std::string arch() const {
    const std::string want = "one of \"mlp\", \"resnet18\", \"resnet34\", \"resnet50\"";
    if (!has("arch")) throw Error(what_ + ": arch is missing; it must be " + want, kHint);
    const nlohmann::json& v = spec_["arch"];
    if (!v.is_string()) fail("arch", v, want);
    const std::string a = v.get<std::string>();
    if (a != "mlp" && !is_resnet_arch(a)) fail("arch", v, want);
    return a;
  }

  std::vector<std::string> classes(int64_t num_classes) const {
    if (!has("classes")) return {};
    const nlohmann::json& v = spec_["classes"];
    const std::string want = "a list of num_classes (" + std::to_string(num_classes) + ") names of at most " +
                             std::to_string(kMaxClassNameBytes) + " bytes, or absent";
    if (!v.is_array() || static_cast<int64_t>(v.size()) != num_classes) fail("classes", v, want);
    std::vector<std::string> out;
    out.reserve(v.size());
    for (const auto& name : v) {
      if (!name.is_string() || name.get_ref<const std::string&>().size() > kMaxClassNameBytes) {
        fail("classes[" + std::to_string(out.size()) + "]", name, want);
      }
      out.push_back(name.get<std::string>());
    }
    return out;
  }

 private:
  const nlohmann::json& spec_;
  const std::string& what_;
};

}  // namespace

std::vector<int64_t> ModelSpec::input_shape() const {
  if (is_mlp()) return {in_features};
  return {3, image_size, image_size};
}

ModelSpec ModelSpec::from_json(const nlohmann::json& spec, const std::string& what) {
  if (!spec.is_object()) {
    throw Error(what + ": the model spec is " + shown(spec) + "; it must be a JSON object with \"arch\"", kHint);
  }
  const Reader r(spec, what);
  ModelSpec s;
  s.arch = r.arch();
  s.num_classes = r.integer("num_classes", 1, kMaxClasses, 0, /*required=*/true);
  const char* const* known;
  if (s.is_mlp()) {
    static const char* const kMlpKeys[] = {"arch", "num_classes", "classes", "in_features", "hidden1", "hidden2", nullptr};
    known = kMlpKeys;
    s.in_features = r.integer("in_features", 1, kMaxMlpWidth, s.in_features, false);
    s.hidden1 = r.integer("hidden1", 1, kMaxMlpWidth, s.hidden1, false);
    s.hidden2 = r.integer("hidden2", 1, kMaxMlpWidth, s.hidden2, false);
    // Each width alone is bounded; their products are what get allocated (65536^2 floats is 16 GB).
    const int64_t weights = s.in_features * s.hidden1 + s.hidden1 * s.hidden2 + s.hidden2 * s.num_classes;
    if (weights > kMaxMlpWeights) {
      throw Error(what + ": in_features x hidden1 + hidden1 x hidden2 + hidden2 x num_classes = " +
                      std::to_string(s.in_features) + " x " + std::to_string(s.hidden1) + " + " +
                      std::to_string(s.hidden1) + " x " + std::to_string(s.hidden2) + " + " +
                      std::to_string(s.hidden2) + " x " + std::to_string(s.num_classes) + " = " +
                      std::to_string(weights) + " weights; it must be at most " + std::to_string(kMaxMlpWeights),
                  kHint);
    }
  } else {
    static const char* const kResNetKeys[] = {"arch", "num_classes", "classes", "image_size", "mean", "std", nullptr};
    known = kResNetKeys;
    s.image_size = r.integer("image_size", kMinImageSize, kMaxImageSize, s.image_size, false);
    s.mean = r.triple("mean", -kMaxAbsMean, kMaxAbsMean, s.mean);
    s.stdev = r.triple("std", kMinStd, kMaxStd, s.stdev);
  }
  s.classes = r.classes(s.num_classes);
  for (const auto& [key, value] : spec.items()) {
    bool is_known = false;
    for (const char* const* k = known; *k; ++k) is_known = is_known || key == *k;
    if (!is_known) s.extra[key] = value;
  }
  return s;
}

nlohmann::json ModelSpec::to_json() const {
  nlohmann::json j = extra.is_object() ? extra : nlohmann::json::object();
  j["arch"] = arch;
  j["num_classes"] = num_classes;
  if (is_mlp()) {
    j["in_features"] = in_features;
    j["hidden1"] = hidden1;
    j["hidden2"] = hidden2;
  } else {
    j["image_size"] = image_size;
    j["mean"] = mean;
    j["std"] = stdev;
  }
  if (!classes.empty()) j["classes"] = classes;
  return j;
}

bool ModelSpec::operator==(const ModelSpec& o) const { return to_json() == o.to_json(); }

}  // namespace ctrain::models
