#pragma once
// The model registry: versioned copies of trained models under one folder (./models), as
// Azure ML's register_model keeps them, with no service behind it.
//
// Layout: ROOT/NAME/VERSION/{model.pt, model.onnx (when it sat beside model.pt), metadata.json}.
// Versions are 1, 2, 3, ... per name and never reused: ROOT/NAME/.last_version records the
// highest ever handed out, and registrations of one name take an flock on ROOT/NAME/.lock, so
// two racing registrations get two versions. A version is staged in a hidden folder and
// renamed into place, so a reader never sees half a version.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::serve {

// "NAME", "NAME:latest" (version 0) or "NAME:3".
struct ModelRef {
  std::string name;
  int64_t version = 0;  // 0: the latest
};

// Throws ctrain::ConfigError for an empty name, a name other than [A-Za-z0-9._-] (not starting
// with '.'), or a version that is not a positive integer or "latest".
ModelRef parse_model_ref(const std::string& text);

struct ModelVersion {
  std::string name;
  int64_t version = 0;
  std::string dir;          // ROOT/NAME/VERSION
  nlohmann::json metadata;  // metadata.json
  std::string model_path() const { return dir + "/model.pt"; }
};

// Hex SHA-256 (64 characters) of `bytes`, by OpenSSL's EVP.
std::string sha256_hex(std::string_view bytes);
// Hex SHA-256 of a file's bytes; throws ctrain::Error naming the path.
std::string sha256_file(const std::string& path);

class Registry {
 public:
  explicit Registry(std::string root);
  const std::string& root() const { return root_; }

  // Copies `model_path` (a ctrain model.pt or checkpoint, verified first) and a model.onnx in
  // the same folder into the next version of `name`. metadata.json records the sha256 and size
  // of each file, the time, the run directory it came from, the model spec, the run's config
  // and its final metrics (the last line of metrics.jsonl beside it, when there is one), and
  // `tags`.
  ModelVersion register_model(const std::string& name, const std::string& model_path,
                              const std::map<std::string, std::string>& tags = {});

  // Every version of every name, by name then version.
  std::vector<ModelVersion> list() const;

  // The version `ref` names, with each file checked against its recorded sha256: a changed or
  // missing file throws ctrain::Error naming it. Unknown names and versions name what exists.
  ModelVersion resolve(const ModelRef& ref) const;

 private:
  std::vector<int64_t> versions(const std::string& name) const;
  std::string root_;
};

}  // namespace ctrain::serve
