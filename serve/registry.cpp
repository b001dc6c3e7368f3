#include "serve/registry.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <cctype>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "engine/checkpoint.h"
#include "models/spec.h"
#include "tracking/jsonl.h"

namespace fs = std::filesystem;

namespace ctrain::serve {
namespace {

// metadata.json holds a spec, a config and a metrics line: kilobytes.
constexpr uint64_t kMaxMetadataBytes = 16 << 20;

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

void check_name(const std::string& name) {
  if (!valid_name(name)) {
    throw ConfigError("bad model name '" + printable(name) + "'",
                      "use letters, digits, '.', '_' and '-' (not starting with '.'), e.g. pytorch-birds");
  }
}

// Holds an exclusive flock on `path` (created if missing) for its lifetime. Registrations of one
// name serialize on it; the kernel drops it if the process dies, so a crash never wedges the
// registry.
class ExclusiveLock {
 public:
  explicit ExclusiveLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw Error("cannot open " + path + ": " + std::strerror(errno), "check that the registry folder is writable");
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        const int err = errno;
        ::close(fd_);
        throw Error("cannot lock " + path + ": " + std::strerror(err));
      }
    }
  }
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;
  ~ExclusiveLock() { ::close(fd_); }

 private:
  int fd_;
};

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t read_last_version(const std::string& path) {
  std::ifstream in(path);
  int64_t v = 0;
  if (in && (!(in >> v) || v < 0 || v == std::numeric_limits<int64_t>::max())) {
    throw Error(path + " is not a version number", "it records the highest version handed out; restore it or remove it");
  }
  return v;
}

// The version a folder name stands for: "1", "2", ... as register_model writes them; 0 for
// anything else ("12abc", "007", "99999999999999999999"), which is not a version.
int64_t version_of(const std::string& s) {
  if (s.empty() || s.size() > 18 || s[0] == '0' ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return 0;
  }
  return std::stoll(s);  // at most 18 digits: no overflow
}

// Tags are printed by `list` and stored in metadata.json: checked before a version is claimed,
// so a bad one costs no version number.
void check_tags(const std::map<std::string, std::string>& tags) {
  for (const auto& [k, v] : tags) {
    if (k.empty() || !is_utf8(k) || !is_utf8(v) || printable(k) != k || printable(v) != v) {
      throw ConfigError("tag " + printable(k) + "=" + printable(v) + " is not printable UTF-8 text",
                        "tags are KEY=VALUE text without control characters, e.g. data=birds");
    }
  }
}

// The run's last metrics line (its final epoch), or null without a metrics.jsonl.
nlohmann::json final_metrics(const std::string& run_dir) {
  const std::string path = run_dir + "/metrics.jsonl";
  if (!fs::exists(path)) return nullptr;
  std::vector<std::string> skipped;  // a malformed line does not cost the run its registration
  const auto rows = tracking::read_jsonl(path, /*allow_torn_last_line=*/true, &skipped);
  return rows.empty() ? nlohmann::json(nullptr) : rows.back();
}

}  // namespace

ModelRef parse_model_ref(const std::string& text) {
  ModelRef ref;
  const auto colon = text.rfind(':');
  ref.name = text.substr(0, colon);
  check_name(ref.name);
  if (colon == std::string::npos) return ref;
  const std::string v = text.substr(colon + 1);
  if (v == "latest") return ref;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < 1) {
    throw ConfigError("bad model version '" + printable(v) + "' in '" + printable(text) + "'", "use NAME, NAME:latest or NAME:N with N >= 1");
  }
  ref.version = n;
  return ref;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw Error("OpenSSL: SHA-256 failed");
  }
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

std::string sha256_file(const std::string& path) { return sha256_hex(read_file(path)); }

Registry::Registry(std::string root) : root_(std::move(root)) {}

std::vector<int64_t> Registry::versions(const std::string& name) const {
  std::vector<int64_t> out;
  const fs::path dir = fs::path(root_) / name;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const int64_t v = version_of(e.path().filename().string());
    std::error_code dir_ec;
    if (v > 0 && e.is_directory(dir_ec)) out.push_back(v);  // stray folders are not versions
  }
  std::sort(out.begin(), out.end());
  return out;
}

ModelVersion Registry::register_model(const std::string& name, const std::string& model_path,
                                      const std::map<std::string, std::string>& tags) {
  check_name(name);
  check_tags(tags);
  if (!fs::is_regular_file(model_path)) {
    throw ConfigError(model_path + " is not a file", "pass the model.pt a trainer wrote, e.g. outputs/model.pt");
  }
  if (!engine::is_checkpoint_file(model_path)) {
    throw ConfigError(model_path + " is not a ctrain model file (no CTRAINCK magic)",
                      "register the model.pt (or a checkpoint) a ctrain trainer wrote");
  }
  const engine::CheckpointMeta meta = engine::checkpoint_peek(model_path);  // verifies size and CRC
  models::ModelSpec::from_json(meta.spec, model_path + ": model spec");  // what every loader will refuse
  const fs::path source = fs::absolute(model_path).lexically_normal();
  const fs::path run_dir = source.parent_path();
  std::vector<std::pair<std::string, std::string>> files{{"model.pt", source.string()}};
  if (fs::is_regular_file(run_dir / "model.onnx")) files.emplace_back("model.onnx", (run_dir / "model.onnx").string());

  const fs::path name_dir = fs::path(root_) / name;
  ensure_writable_dir(name_dir.string());
  ExclusiveLock lock((name_dir / ".lock").string());
  const std::vector<int64_t> existing = versions(name);
  const int64_t last = std::max(read_last_version((name_dir / ".last_version").string()),
                                existing.empty() ? int64_t{0} : existing.back());
  const int64_t version = last + 1;
  // Claim the number first: a crash after this line skips the version, never reuses it.
  write_file_atomic((name_dir / ".last_version").string(), std::to_string(version) + "\n");

  const fs::path staging = name_dir / (".staging-" + std::to_string(version));
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) throw Error("cannot create " + staging.string() + ": " + ec.message());
  try {
    nlohmann::json file_meta = nlohmann::json::object();
    for (const auto& [base, from] : files) {
      // The bytes hashed are the bytes written: write_file_atomic syncs them to disk.
      const std::string bytes = read_file(from);
      write_file_atomic((staging / base).string(), bytes);
      file_meta[base] = {{"sha256", sha256_hex(bytes)}, {"bytes", bytes.size()}};
    }
    nlohmann::json md = {{"name", name},
                         {"version", version},
                         {"created", utc_now()},
                         {"source", source.string()},
                         {"run_dir", run_dir.string()},
                         {"files", file_meta},
                         {"tags", nlohmann::json(tags)},
                         {"spec", meta.spec},
                         {"config", meta.config},
                         {"best_val_acc", meta.best_val_acc},
                         {"best_epoch", meta.best_epoch},
                         {"metrics", final_metrics(run_dir.string())}};
    write_file_atomic((staging / "metadata.json").string(), json_dump(md, 2) + "\n");
    const fs::path final_dir = name_dir / std::to_string(version);
    fs::rename(staging, final_dir, ec);
    if (ec) throw Error("cannot rename " + staging.string() + " to " + final_dir.string() + ": " + ec.message());
    return ModelVersion{name, version, final_dir.string(), md};
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
}

std::vector<ModelVersion> Registry::list() const {
  std::vector<ModelVersion> out;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    if (e.is_directory() && valid_name(e.path().filename().string())) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    for (int64_t v : versions(name)) {
      const std::string dir = (fs::path(root_) / name / std::to_string(v)).string();
      nlohmann::json md;
      try {
        md = json_parse(read_file(dir + "/metadata.json", kMaxMetadataBytes), dir + "/metadata.json");
      } catch (const std::exception& e) {
        md = {{"error", e.what()}};
      }
      out.push_back(ModelVersion{name, v, dir, md});
    }
  }
  return out;
}

ModelVersion Registry::resolve(const ModelRef& ref) const {
  const std::vector<int64_t> have = versions(ref.name);
  if (have.empty()) {
    std::string known;
    for (const auto& m : list()) {
      if (known.find(m.name + " ") == std::string::npos) known += m.name + " ";
    }
    throw Error("no model named '" + ref.name + "' in the registry " + root_,
                known.empty() ? "register one: ctrain-registry register " + ref.name + " outputs/model.pt"
                              : "registered names: " + known);
  }
  const int64_t v = ref.version == 0 ? have.back() : ref.version;
  if (std::find(have.begin(), have.end(), v) == have.end()) {
    throw Error("model '" + ref.name + "' has no version " + std::to_string(v) + " in " + root_,
                "versions: 1.." + std::to_string(have.back()) + " (ctrain-registry list)");
  }
  ModelVersion mv{ref.name, v, (fs::path(root_) / ref.name / std::to_string(v)).string(), {}};
  const std::string md_path = mv.dir + "/metadata.json";
  mv.metadata = json_parse(read_file(md_path, kMaxMetadataBytes), md_path);
  if (!mv.metadata.contains("files") || !mv.metadata["files"].is_object() || !mv.metadata["files"].contains("model.pt")) {
    throw Error(md_path + " lists no model.pt", "the version is damaged; register the model again");
  }
  for (const auto& [base, info] : mv.metadata["files"].items()) {
    const std::string path = mv.dir + "/" + base;
    if (!fs::is_regular_file(path)) throw Error(path + " is missing", "the version is damaged; register the model again");
    const std::string want = info.is_object() && info.contains("sha256") && info["sha256"].is_string()
                                 ? info["sha256"].get<std::string>()
                                 : "";
    const std::string got = sha256_file(path);
    if (got != want) {
      throw Error(path + " fails its sha256 check (recorded " + want + ", now " + got + ")",
                  "the file changed after registration; register the model again as a new version");
    }
  }
  return mv;
}

}  // namespace ctrain::serve
