#pragma once
// The model spec every checkpoint carries ({"arch": "mlp", "in_features": 784, ...}), as a
// validated type. A model.pt comes from outside (a registry, a download, a colleague), so its
// spec is hostile input: from_json() checks every field's type and range before anything is
// sized from it (a 120 GB allocation, a mean of 1 value read as 3, an image size ResNet cannot
// take).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::models {

// The ranges from_json() accepts. The image side is what ctrain-birds and ctrain-export accept
// at the low end (ResNet's 32x downsampling still leaves 1x1) and keeps a decoded, resized eval
// image under 100 MB at the high end; the MLP's weights stay under 400 MB.
constexpr int64_t kMaxClasses = 100'000;
constexpr int64_t kMinImageSize = 16, kMaxImageSize = 2048;
constexpr int64_t kMaxMlpWidth = 65'536;  // in_features, hidden1, hidden2
constexpr int64_t kMaxMlpWeights = 100'000'000;
constexpr size_t kMaxClassNameBytes = 1024;
constexpr double kMaxAbsMean = 1000.0, kMinStd = 1e-6, kMaxStd = 1000.0;

struct ModelSpec {
  std::string arch;  // "mlp" | "resnet18" | "resnet34" | "resnet50"
  int64_t num_classes = 0;
  // arch "mlp" (absent fields default to models::MlpOptions'):
  int64_t in_features = 784, hidden1 = 256, hidden2 = 128;
  // ResNets: the eval transform's crop side and per-channel (RGB) normalisation, ImageNet's
  // when absent.
  int64_t image_size = 224;
  std::array<double, 3> mean{0.485, 0.456, 0.406};
  std::array<double, 3> stdev{0.229, 0.224, 0.225};  // JSON key "std"
  std::vector<std::string> classes;  // one name per class, or empty ("0", "1", ... are used)
  // Fields this version does not read (unknown keys, and the other arch's keys), kept verbatim
  // so that to_json() gives them back.
  nlohmann::json extra = nlohmann::json::object();

  bool is_mlp() const { return arch == "mlp"; }
  // One input's shape: {in_features} for the MLP, {3, image_size, image_size} for a ResNet.
  std::vector<int64_t> input_shape() const;

  // Validates every field it reads. Throws ctrain::Error "<what>: <field> is <value>; <the
  // allowed type and range>" for the first bad one (`what` names the source, e.g. a file).
  static ModelSpec from_json(const nlohmann::json& spec, const std::string& what = "model spec");
  // The fields of its arch (defaults filled in) and `extra`: from_json(s.to_json()) == s, and
  // the spec a trainer wrote comes back equal.
  nlohmann::json to_json() const;

  bool operator==(const ModelSpec& o) const;
};

}  // namespace ctrain::models
