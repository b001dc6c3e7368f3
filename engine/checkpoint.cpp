#include "engine/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"

namespace ctrain::engine {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'C', 'T', 'R', 'A', 'I', 'N', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 8 + 4 + 8 + 4;

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

uint32_t crc_of(const char* data, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib's length is a uInt: feed it in 1 GiB pieces
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

// Returns the verified payload of a checkpoint file's bytes.
std::string_view verified_payload(const std::string& path, const std::string& bytes) {
  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    throw Error(path + ": not a ctrain checkpoint (bad magic" +
                    std::string(bytes.size() < kHeaderSize ? ", file too short" : "") + ")",
                "was it written by ctrain? is it truncated?");
  }
  const uint32_t version = static_cast<uint32_t>(get_le(bytes.data() + 8, 4));
  if (version != kVersion) {
    throw Error(path + ": checkpoint format version " + std::to_string(version) +
                " is not supported (this ctrain reads version " + std::to_string(kVersion) + ")");
  }
  const uint64_t size = get_le(bytes.data() + 12, 8);
  const uint32_t crc = static_cast<uint32_t>(get_le(bytes.data() + 20, 4));
  if (size != bytes.size() - kHeaderSize) {
    throw Error(path + ": checkpoint is truncated or padded: header says " + std::to_string(size) +
                " payload bytes, file has " + std::to_string(bytes.size() - kHeaderSize));
  }
  if (crc_of(bytes.data() + kHeaderSize, size) != crc) {
    throw Error(path + ": checkpoint checksum mismatch (the file is corrupt)",
                "resume from an older checkpoint with --resume-from");
  }
  return std::string_view(bytes.data() + kHeaderSize, size);
}

std::string read_string(torch::serialize::InputArchive& ar, const std::string& key) {
  c10::IValue v;
  ar.read(key, v);
  return v.toStringRef();
}

CheckpointMeta read_meta(torch::serialize::InputArchive& ar) {
  CheckpointMeta m;
  c10::IValue v;
  ar.read("epoch", v);
  m.epoch = v.toInt();
  ar.read("best_val_acc", v);
  m.best_val_acc = v.toDouble();
  ar.read("best_epoch", v);
  m.best_epoch = v.toInt();
  m.config = nlohmann::json::parse(read_string(ar, "config"));
  m.spec = nlohmann::json::parse(read_string(ar, "spec"));
  if (ar.try_read("loss_scale", v)) {
    LossScale s;
    s.scale = v.toDouble();
    ar.read("loss_scale_growth_tracker", v);
    s.growth_tracker = v.toInt();
    m.loss_scale = s;
  }
  return m;
}

// LibTorch's Module::load silently *replaces* a parameter whose saved shape differs (it calls
// set_), so a checkpoint of another model would load "fine". Load tensor by tensor instead,
// collecting every missing, unexpected or mis-shaped name for one clear error.
void load_module_checked(torch::serialize::InputArchive& ar, torch::nn::Module& module,
                         const std::string& prefix, std::vector<std::string>* problems) {
  torch::NoGradGuard no_grad;
  std::set<std::string> expected;
  auto load_one = [&](const std::string& name, torch::Tensor& dst, bool is_buffer) {
    expected.insert(name);
    if (!dst.defined()) return;
    torch::Tensor src;
    if (!ar.try_read(name, src, is_buffer)) {
      problems->push_back("missing " + prefix + name);
    } else if (src.sizes() != dst.sizes()) {
      std::ostringstream msg;
      msg << prefix << name << " has shape " << src.sizes() << " in the file, " << dst.sizes()
          << " in the model";
      problems->push_back(msg.str());
    } else {
      dst.copy_(src);
    }
  };
  for (auto& p : module.named_parameters(/*recurse=*/false)) load_one(p.key(), p.value(), false);
  for (auto& b : module.named_buffers(/*recurse=*/false)) load_one(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    expected.insert(child.key());
    torch::serialize::InputArchive child_ar;
    if (!ar.try_read(child.key(), child_ar)) {
      problems->push_back("missing " + prefix + child.key() + ".*");
      continue;
    }
    load_module_checked(child_ar, *child.value(), prefix + child.key() + ".", problems);
  }
  for (const auto& key : ar.keys()) {
    if (!expected.count(key)) problems->push_back("unexpected " + prefix + key);
  }
}

c10::Device module_device(torch::nn::Module& module) {
  auto params = module.parameters();
  return params.empty() ? c10::Device(c10::kCPU) : params.front().device();
}

}  // namespace

void checkpoint_save(const std::string& path, torch::nn::Module& module,
                     torch::optim::Optimizer* optimizer, const CheckpointMeta& meta) {
  torch::serialize::OutputArchive ar;
  torch::serialize::OutputArchive model_ar(ar.compilation_unit());
  module.save(model_ar);
  ar.write("model", model_ar);
  if (optimizer != nullptr) {
    torch::serialize::OutputArchive optim_ar(ar.compilation_unit());
    optimizer->save(optim_ar);
    ar.write("optimizer", optim_ar);
    ar.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  }
  ar.write("epoch", c10::IValue(meta.epoch));
  ar.write("best_val_acc", c10::IValue(meta.best_val_acc));
  ar.write("best_epoch", c10::IValue(meta.best_epoch));
  ar.write("config", c10::IValue(meta.config.dump()));
  ar.write("spec", c10::IValue(meta.spec.dump()));
  if (meta.loss_scale) {
    ar.write("loss_scale", c10::IValue(meta.loss_scale->scale));
    ar.write("loss_scale_growth_tracker", c10::IValue(meta.loss_scale->growth_tracker));
  }

  std::string payload;
  ar.save_to([&payload](const void* data, size_t n) {
    payload.append(static_cast<const char*>(data), n);
    return n;
  });
  std::string file(kMagic, 8);
  put_le(file, kVersion, 4);
  put_le(file, payload.size(), 8);
  put_le(file, crc_of(payload.data(), payload.size()), 4);
  file += payload;
  write_file_atomic(path, file);
}

CheckpointMeta checkpoint_load(const std::string& path, torch::nn::Module& module,
                               torch::optim::Optimizer* optimizer) {
  const std::string bytes = read_file(path);
  const std::string_view payload = verified_payload(path, bytes);
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(payload.data(), payload.size(), module_device(module));
    CheckpointMeta meta = read_meta(ar);
    torch::serialize::InputArchive model_ar;
    ar.read("model", model_ar);
    std::vector<std::string> problems;
    load_module_checked(model_ar, module, "", &problems);
    if (!problems.empty()) {
      std::string list;
      for (size_t i = 0; i < problems.size() && i < 10; ++i) list += "\n    " + problems[i];
      if (problems.size() > 10) list += "\n    ... " + std::to_string(problems.size() - 10) + " more";
      throw Error(path + ": checkpoint does not fit this model (" +
                      std::to_string(problems.size()) + " problems):" + list,
                  "was it written with other model options (layer sizes, arch, classes)?");
    }
    if (optimizer != nullptr) {
      torch::serialize::InputArchive optim_ar;
      ar.read("optimizer", optim_ar);
      optimizer->load(optim_ar);
      torch::Tensor rng;
      ar.read("rng_cpu", rng);
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng.to(torch::kCPU));  // the archive maps tensors to the model's device
    }
    return meta;
  } catch (const c10::Error& e) {
    throw Error(path + ": cannot load checkpoint into this model: " + e.what_without_backtrace(),
                "was it written with other model options (layer sizes, arch, classes)?");
  }
}

CheckpointMeta checkpoint_peek(const std::string& path) {
  const std::string bytes = read_file(path);
  const std::string_view payload = verified_payload(path, bytes);
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(payload.data(), payload.size());
    return read_meta(ar);
  } catch (const c10::Error& e) {
    throw Error(path + ": unreadable checkpoint: " + e.what_without_backtrace());
  }
}

namespace {
void flatten_archive(torch::serialize::InputArchive& ar, const std::string& prefix,
                     std::map<std::string, torch::Tensor>* out) {
  for (const auto& key : ar.keys()) {
    torch::Tensor t;
    if (ar.try_read(key, t, /*is_buffer=*/true) || ar.try_read(key, t)) {
      (*out)[prefix + key] = t;
      continue;
    }
    torch::serialize::InputArchive child;
    if (ar.try_read(key, child)) flatten_archive(child, prefix + key + ".", out);
  }
}
}  // namespace

std::map<std::string, torch::Tensor> checkpoint_tensors(const std::string& path) {
  const std::string bytes = read_file(path);
  const std::string_view payload = verified_payload(path, bytes);
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(payload.data(), payload.size());
    torch::serialize::InputArchive model_ar;
    ar.read("model", model_ar);
    std::map<std::string, torch::Tensor> out;
    flatten_archive(model_ar, "", &out);
    return out;
  } catch (const c10::Error& e) {
    throw Error(path + ": unreadable checkpoint: " + e.what_without_backtrace());
  }
}

bool is_checkpoint_file(const std::string& path) {
  // Only a regular file can be one; opening a FIFO to look would block until a writer came.
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {0};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, kMagic, 8) == 0;
}

std::string checkpoint_path(const std::string& dir, int64_t epoch) {
  char name[32];
  std::snprintf(name, sizeof(name), "epoch-%04lld.pt", static_cast<long long>(epoch));
  return (fs::path(dir) / name).string();
}

std::vector<std::string> checkpoint_list(const std::string& dir) {
  std::vector<std::pair<long long, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    long long epoch = 0;
    char tail[8] = {0};
    if (std::sscanf(name.c_str(), "epoch-%lld.%3s", &epoch, tail) == 2 &&
        std::strcmp(tail, "pt") == 0 && name.back() == 't') {
      found.emplace_back(epoch, e.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

}  // namespace ctrain::engine
