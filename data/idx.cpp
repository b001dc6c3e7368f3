#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>

#include "core/error.h"

namespace ctrain::data {
namespace {

namespace fs = std::filesystem;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to n bytes; returns how many were read. gzread reads plain files transparently,
// which is how raw and gzipped IDX files share one code path.
size_t gz_read(gzFile f, uint8_t* dst, size_t n, const std::string& path) {
  size_t total = 0;
  while (total < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
    const int got = gzread(f, dst + total, chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw Error(path + ": corrupt gzip stream (" + std::string(msg ? msg : "?") + ")");
    }
    if (got == 0) break;
    total += static_cast<size_t>(got);
  }
  // A gzip stream cut short reports Z_BUF_ERROR only through gzerror.
  int code = 0;
  gzerror(f, &code);
  if (code == Z_BUF_ERROR) throw Error(path + ": truncated gzip stream (unexpected end of file)");
  return total;
}

}  // namespace

IdxArray read_idx(const std::string& path, int expected_ndim) {
  GzFile f(gzopen(path.c_str(), "rb"));
  if (!f) throw Error("cannot open " + path, "check --data-folder");
  uint8_t magic[4];
  if (gz_read(f.get(), magic, 4, path) != 4) {
    throw Error(path + ": truncated IDX file (no 4-byte magic number)");
  }
  if (magic[0] != 0 || magic[1] != 0) {
    throw Error(path + ": not an IDX file (bad magic number; expected 00 00 08 0" +
                std::to_string(expected_ndim) + ")");
  }
  if (magic[2] != 0x08) {
    throw Error(path + ": unsupported IDX element type 0x" + std::to_string(magic[2]) +
                " (MNIST files hold unsigned bytes, type 0x08)");
  }
  if (magic[3] != expected_ndim) {
    throw Error(path + ": IDX file has " + std::to_string(magic[3]) + " dimensions, expected " +
                std::to_string(expected_ndim) + " (are image and label files swapped?)");
  }
  IdxArray out;
  uint64_t count = 1;
  // Sizes come from untrusted bytes: cap the payload well below what would overflow or
  // exhaust memory before allocating anything.
  constexpr uint64_t kMaxBytes = uint64_t{1} << 34;
  for (int d = 0; d < expected_ndim; ++d) {
    uint8_t b[4];
    if (gz_read(f.get(), b, 4, path) != 4) {
      throw Error(path + ": truncated IDX header (dimension " + std::to_string(d) + " missing)");
    }
    const uint32_t dim = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) |
                         uint32_t{b[3]};
    if (dim == 0) throw Error(path + ": IDX dimension " + std::to_string(d) + " is zero");
    count *= dim;
    if (count > kMaxBytes) throw Error(path + ": IDX dimensions too large (corrupt header?)");
    out.dims.push_back(dim);
  }
  // Grow the buffer as bytes arrive rather than trusting the header for one big allocation.
  out.bytes.reserve(std::min<uint64_t>(count, uint64_t{1} << 20));
  constexpr size_t kChunk = size_t{1} << 20;
  while (out.bytes.size() < count) {
    const size_t want = std::min<uint64_t>(kChunk, count - out.bytes.size());
    const size_t old = out.bytes.size();
    out.bytes.resize(old + want);
    const size_t got = gz_read(f.get(), out.bytes.data() + old, want, path);
    if (got < want) {
      throw Error(path + ": truncated IDX file: header promises " + std::to_string(count) +
                  " bytes of data, file has " + std::to_string(old + got));
    }
  }
  uint8_t extra;
  if (gz_read(f.get(), &extra, 1, path) != 0) {
    throw Error(path + ": IDX file has trailing bytes after the " + std::to_string(count) +
                " bytes its header declares (corrupt or wrong file?)");
  }
  return out;
}

namespace {

// tf_mnist.py globs '**/<name>': accept the folder itself or one level of subfolders, raw or
// gzipped, and the '.idx' spelling of the original distribution.
std::string find_mnist_file(const std::string& folder, const std::string& stem) {
  std::vector<std::string> names;
  for (const std::string& s : {stem + "-idx", stem + ".idx"}) {
    const std::string suffix = stem.find("images") != std::string::npos ? "3-ubyte" : "1-ubyte";
    names.push_back(s + suffix);
    names.push_back(s + suffix + ".gz");
  }
  std::vector<fs::path> dirs{fs::path(folder)};
  std::error_code ec;
  std::vector<fs::path> subs;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (e.is_directory(ec)) subs.push_back(e.path());
  }
  std::sort(subs.begin(), subs.end());
  dirs.insert(dirs.end(), subs.begin(), subs.end());
  for (const auto& d : dirs) {
    for (const auto& n : names) {
      if (fs::is_regular_file(d / n, ec)) return (d / n).string();
    }
  }
  throw Error("no " + names[0] + "[.gz] in " + folder + " or its subfolders",
              "point --data-folder at a folder holding the four MNIST IDX files");
}

MnistSplit load_split(const std::string& folder, const std::string& prefix, int64_t* rows,
                      int64_t* cols) {
  const std::string img_path = find_mnist_file(folder, prefix + "-images");
  const std::string lbl_path = find_mnist_file(folder, prefix + "-labels");
  IdxArray img = read_idx(img_path, 3);
  IdxArray lbl = read_idx(lbl_path, 1);
  if (img.dims[0] != lbl.dims[0]) {
    throw Error("image/label count mismatch: " + img_path + " has " + std::to_string(img.dims[0]) +
                " images but " + lbl_path + " has " + std::to_string(lbl.dims[0]) + " labels");
  }
  if (*rows == 0) {
    *rows = img.dims[1];
    *cols = img.dims[2];
  } else if (img.dims[1] != *rows || img.dims[2] != *cols) {
    throw Error(img_path + ": images are " + std::to_string(img.dims[1]) + "x" +
                std::to_string(img.dims[2]) + " but the training images are " +
                std::to_string(*rows) + "x" + std::to_string(*cols));
  }
  for (size_t i = 0; i < lbl.bytes.size(); ++i) {
    if (lbl.bytes[i] >= kMnistClasses) {
      throw Error(lbl_path + ": label " + std::to_string(lbl.bytes[i]) + " at index " +
                  std::to_string(i) + " is outside [0, " + std::to_string(kMnistClasses) + ")");
    }
  }
  const int64_t n = img.dims[0];
  MnistSplit s;
  s.images = torch::from_blob(img.bytes.data(), {n, img.dims[1] * img.dims[2]}, torch::kUInt8)
                 .to(torch::kFloat32)
                 .div_(255.0f);
  s.labels = torch::from_blob(lbl.bytes.data(), {n}, torch::kUInt8).to(torch::kInt64);
  return s;
}

}  // namespace

MnistData load_mnist(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw Error("data folder " + folder + " does not exist or is not a directory",
                "pass --data-folder pointing at the MNIST IDX files "
                "(e.g. /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)");
  }
  MnistData d;
  d.train = load_split(folder, "train", &d.rows, &d.cols);
  d.test = load_split(folder, "t10k", &d.rows, &d.cols);
  return d;
}

}  // namespace ctrain::data
