// ctrain-score: offline batch scoring with the service's preprocessing and numbers.
//   ctrain-score --model outputs/model.pt photos/ more.jpg        -> {"file", "label", "probability"}
//   ctrain-score --model mnist:latest t10k-images-idx3-ubyte.gz   -> one line per image, then accuracy
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "apps/common/cli.h"
#include "apps/common/serving.h"
#include "core/fs.h"
#include "core/json.h"
#include "data/decode.h"
#include "data/idx.h"
#include "serve/handler.h"

namespace fs = std::filesystem;

namespace {

bool is_scored_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// An IDX file by its content: two zero bytes, then type 0x08 (or a gzip stream).
bool looks_like_idx(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  unsigned char b[3] = {1, 1, 1};
  const size_t n = std::fread(b, 1, 3, f);
  std::fclose(f);
  return n == 3 && ((b[0] == 0 && b[1] == 0 && b[2] == 0x08) || (b[0] == 0x1f && b[1] == 0x8b && path.find("idx") != std::string::npos));
}

// t10k-images-idx3-ubyte(.gz) -> t10k-labels-idx1-ubyte(.gz), the MNIST naming, if it exists.
std::string labels_beside(const std::string& images) {
  const fs::path p(images);
  std::string name = p.filename().string();
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"images-idx3", "labels-idx1"},
                                 {"images.idx3", "labels.idx1"}}) {
    const auto at = name.find(from);
    if (at == std::string::npos) continue;
    name.replace(at, from.size(), to);
    const fs::path candidate = p.parent_path() / name;
    if (fs::is_regular_file(candidate)) return candidate.string();
  }
  return "";
}

// One JSON line on stdout. File names are bytes, not necessarily UTF-8 (a Latin-1 name in a
// folder): json_dump shows such bytes as U+FFFD instead of throwing, so the rest is scored.
void print_line(const nlohmann::json& line) { std::printf("%s\n", ctrain::json_dump(line).c_str()); }

void print_predictions(const std::vector<std::string>& files, const std::vector<ctrain::serve::Prediction>& preds) {
  for (size_t i = 0; i < preds.size(); ++i) {
    print_line({{"file", files[i]}, {"label", preds[i].label}, {"probability", preds[i].probability}});
  }
}

// Images above this are refused unread (a decompression-bomb check follows for what is read).
constexpr uint64_t kMaxImageBytes = uint64_t{64} << 20;

// Image files scored in batches of --batch-size; a file that cannot be read or decoded is
// reported on stderr and counted, and the rest are still scored.
class ImageScorer {
 public:
  ImageScorer(ctrain::serve::Handler& handler, int64_t batch_size) : handler_(handler), batch_size_(batch_size) {}

  void score(const std::string& path) {
    try {
      // read_file refuses a device, FIFO or directory (/dev/zero would fill memory) and a huge file.
      rows_.push_back(handler_.preprocess_image(ctrain::read_file(path, kMaxImageBytes), ctrain::printable(path)));
      files_.push_back(path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ctrain-score: skipped %s\n", e.what());
      ++failed_;
    }
    if (static_cast<int64_t>(rows_.size()) >= batch_size_) flush();
  }

  // Scores the images waiting for a full batch (before another kind of input, and at the end).
  void flush() {
    if (rows_.empty()) return;
    print_predictions(files_, handler_.postprocess(handler_.infer(torch::cat(rows_, 0))));
    files_.clear();
    rows_.clear();
  }

  int64_t failed() const { return failed_; }

 private:
  ctrain::serve::Handler& handler_;
  int64_t batch_size_;
  int64_t failed_ = 0;
  std::vector<std::string> files_;
  std::vector<torch::Tensor> rows_;
};

// The .jpg/.jpeg/.png files under `dir` (recursively), sorted; unreadable parts are warned about.
std::vector<std::string> images_under(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_regular_file(type_ec) && is_scored_image(it->path())) found.push_back(it->path().string());
  }
  if (ec) std::fprintf(stderr, "ctrain-score: warning: %s: %s\n", ctrain::printable(dir).c_str(), ec.message().c_str());
  std::sort(found.begin(), found.end());
  if (found.empty()) {
    std::fprintf(stderr, "ctrain-score: warning: no .jpg/.jpeg/.png files under %s\n", ctrain::printable(dir).c_str());
  }
  return found;
}

// An MNIST IDX images file: one line per image, and the accuracy when its labels file is beside it.
void score_idx(ctrain::serve::Handler& handler, const std::string& in, int64_t batch_size) {
  const ctrain::data::IdxArray idx = ctrain::data::read_idx(in, 3);
  const int64_t n = idx.dims[0], per = idx.dims[1] * idx.dims[2];
  if (std::vector<int64_t>{per} != handler.input_shape()) {
    throw ctrain::Error(in + " holds " + std::to_string(idx.dims[1]) + "x" + std::to_string(idx.dims[2]) +
                        " images; the model takes " + ctrain::serve::shape_string(handler.input_shape()));
  }
  // As ctrain-mnist reads them: pixels / 255.
  const torch::Tensor all = torch::from_blob(const_cast<uint8_t*>(idx.bytes.data()), {n, per}, torch::kUInt8)
                                .to(torch::kFloat32)
                                .div_(255.0);
  const std::string labels_path = labels_beside(in);
  std::vector<uint8_t> labels;
  if (!labels_path.empty()) labels = ctrain::data::read_idx(labels_path, 1).bytes;
  for (uint8_t l : labels) {
    if (l >= handler.classes().size()) {
      throw ctrain::Error(labels_path + " has label " + std::to_string(l) + ", but the model has " +
                              std::to_string(handler.classes().size()) + " classes",
                          "score it with the model trained on this data set");
    }
  }
  const bool labelled = static_cast<int64_t>(labels.size()) == n;
  int64_t correct = 0;
  for (int64_t at = 0; at < n; at += batch_size) {
    const int64_t m = std::min(batch_size, n - at);
    const auto preds = handler.postprocess(handler.infer(all.narrow(0, at, m)));
    for (int64_t i = 0; i < m; ++i) {
      nlohmann::json line = {{"file", in}, {"index", at + i}, {"label", preds[i].label},
                             {"probability", preds[i].probability}};
      if (labelled) {
        line["target"] = handler.classes().at(labels[at + i]);
        correct += preds[i].index == labels[at + i];
      }
      print_line(line);
    }
  }
  if (labelled) {
    print_line({{"file", in}, {"labels", labels_path}, {"accuracy", double(correct) / n}, {"correct", correct},
                {"total", n}});
  } else if (!labels_path.empty()) {
    std::fprintf(stderr, "ctrain-score: %s has %zu labels for %lld images: no accuracy\n", labels_path.c_str(),
                 labels.size(), static_cast<long long>(n));
  }
}

int run(int argc, char** argv) {
  std::string model_arg, registry = "models", device = "cpu";
  std::vector<std::string> inputs;
  int64_t batch_size = 64;
  int threads = 0;
  CLI::App app{"ctrain-score: score images (JPEG/PNG files or folders) or an MNIST IDX file offline, as JSON lines"};
  app.option_defaults()->always_capture_default();
  app.add_option("--model", model_arg, "a model.pt / checkpoint, or NAME[:VERSION|latest] in --registry")->required();
  app.add_option("inputs", inputs, "image files, folders of images (searched recursively), or an IDX images file")->required();
  app.add_option("--registry", registry, "the model registry folder (ctrain-registry)");
  app.add_option("--batch-size,--batch_size", batch_size, "inputs per forward");
  app.add_option("--device", device, "cpu | cuda[:N]");
  app.add_option("--threads", threads, "intra-op CPU threads (0: LibTorch default)");
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;
  if (batch_size < 1 || batch_size > 65536) throw ctrain::ConfigError("--batch-size must be in 1..65536");
  if (threads < 0 || threads > 1024) throw ctrain::ConfigError("--threads must be in 0..1024");
  for (const auto& in : inputs) {
    if (!fs::exists(in)) throw ctrain::ConfigError(ctrain::printable(in) + ": no such file or folder");
  }
  const torch::Device dev = ctrain::apps::parse_serving_device(device);
  if (threads > 0) torch::set_num_threads(threads);
  ctrain::data::use_single_threaded_backend();  // decoding between forwards; no pool of its own
  ctrain::apps::ServedModel served = ctrain::apps::open_served_model(model_arg, registry);
  ctrain::serve::Handler handler(std::move(served.model), dev);

  ImageScorer images(handler, batch_size);
  for (const auto& in : inputs) {
    if (fs::is_directory(in)) {
      for (const auto& f : images_under(in)) images.score(f);
    } else if (fs::is_regular_file(in) && looks_like_idx(in)) {
      images.flush();
      score_idx(handler, in, batch_size);
    } else {
      images.score(in);  // a device or FIFO: refused unopened by read_file, and counted as failed
    }
  }
  images.flush();
  std::fflush(stdout);
  if (images.failed() > 0) {
    std::fprintf(stderr, "ctrain-score: %lld input(s) could not be scored (named above)\n",
                 static_cast<long long>(images.failed()));
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctrain::apps::guarded_main("ctrain-score", [&] { return run(argc, argv); });
}
