#pragma once
// Shared test fixtures: temporary directories, IDX file writers, synthetic MNIST-like data
// written as real files, and running the built binaries as real processes.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/process.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace ctrain::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ctrain-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << path;
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
  }
}

// The bytes of an IDX file of unsigned bytes with the given dims.
inline std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  s.append(reinterpret_cast<const char*>(data.data()), data.size());
  return s;
}

// A learnable MNIST-like split: class c lights up row band c (rows 2c..2c+3) of a 28x28 image
// over uniform noise, so an MLP separates the classes within an epoch or two.
struct SyntheticSplit {
  std::vector<uint8_t> images, labels;
};
inline SyntheticSplit synthetic_split(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(0, 120), label(0, 9);
  SyntheticSplit s;
  s.images.resize(static_cast<size_t>(n) * 784);
  s.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const int c = label(rng);
    s.labels[i] = static_cast<uint8_t>(c);
    for (int p = 0; p < 784; ++p) {
      const int row = p / 28;
      const bool lit = row >= 2 * c + 2 && row < 2 * c + 6;
      s.images[static_cast<size_t>(i) * 784 + p] =
          static_cast<uint8_t>(lit ? 255 - noise(rng) / 2 : noise(rng));
    }
  }
  return s;
}

// Writes the four MNIST files into `dir` (gzipped or raw).
inline void write_synthetic_mnist(const std::string& dir, int n_train, int n_test, bool gz = true) {
  fs::create_directories(dir);
  const std::string ext = gz ? ".gz" : "";
  const SyntheticSplit tr = synthetic_split(n_train, 1), te = synthetic_split(n_test, 2);
  const uint32_t ntr = n_train, nte = n_test;
  write_bytes(dir + "/train-images-idx3-ubyte" + ext, idx_bytes({ntr, 28, 28}, tr.images), gz);
  write_bytes(dir + "/train-labels-idx1-ubyte" + ext, idx_bytes({ntr}, tr.labels), gz);
  write_bytes(dir + "/t10k-images-idx3-ubyte" + ext, idx_bytes({nte, 28, 28}, te.images), gz);
  write_bytes(dir + "/t10k-labels-idx1-ubyte" + ext, idx_bytes({nte}, te.labels), gz);
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command as a real process and captures its output.
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen(("( " + cmd + " ) 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Starts `cmd` under sh with its output in `log` and returns its pid; the shell execs the
// command, so a signal sent to the pid reaches the program itself. The product's own spawn
// (core/process.h): a group of its own, and killed if the test process dies.
inline pid_t spawn_command(const std::string& cmd, const std::string& log) {
  return ctrain::Process::spawn({"/bin/sh", "-c", "exec " + cmd + " > " + log + " 2>&1"}).pid();
}

// Waits for a spawned process; its exit code, or 128 + the signal that killed it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Polls `cond` every 50 ms for up to `seconds`; false when it never came true.
template <class F>
bool poll_until(F cond, double seconds = 180) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// A whole text file ("" when it does not exist).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The non-empty lines of a file.
inline size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// A TCP port for a server a test starts, never the same twice in this process nor handed to
// another test process at the same time (ctest runs them in parallel). A port the kernel chose
// (bind to 0) is free only until it is released: the kernel may hand it out again as any
// connection's source port before the server binds it. So the ports come from outside the
// ephemeral range (ip_local_port_range), which the kernel never hands out; each is claimed
// with a lock on its byte of one file, held until this process exits (a crash included), and
// checked by binding it (another program may listen there). The search starts at a place that
// depends on the pid, so processes rarely even meet on a lock.
inline int free_port() {
  static std::mutex mu;
  const std::lock_guard<std::mutex> lock(mu);
  struct Range {
    int lo = 10000, hi = 32768;  // [lo, hi)
  };
  static const Range range = [] {
    int eph_lo = 32768, eph_hi = 60999;
    std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> eph_lo >> eph_hi;
    // Below the ephemeral range, clear of the well-known and commonly configured ports, or
    // above it when the range starts too low for that.
    return eph_lo - 10000 >= 1000 ? Range{10000, eph_lo} : Range{eph_hi + 1, 65536};
  }();
  // Never closed: closing any descriptor of the file would drop this process's locks.
  static const int claims = ::open((fs::temp_directory_path() / ("ctrain-test-ports-" + std::to_string(::getuid()) +
                                                                 ".lock")).c_str(),
                                   O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  const int span = range.hi - range.lo;
  static int next = static_cast<int>((static_cast<int64_t>(::getpid()) * 64) % span);
  auto claim = [&](int port) {  // fails while another process holds it; ours are never offered again
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_start = port;
    l.l_len = 1;
    return claims < 0 || ::fcntl(claims, F_SETLK, &l) == 0;
  };
  auto bindable = [](int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
  };
  for (int tried = 0; tried < span; ++tried) {
    const int port = range.lo + next;
    next = (next + 1) % span;
    if (claim(port) && bindable(port)) return port;
  }
  ADD_FAILURE() << "free_port: no free port in " << range.lo << ".." << range.hi - 1;
  return 0;
}

// The parameters of the default MNIST MLP saved at `path` (a ctrain model.pt or checkpoint).
inline std::vector<torch::Tensor> mlp_params(const std::string& path) {
  ctrain::models::Mlp m(ctrain::models::MlpOptions{});
  ctrain::engine::checkpoint_load(path, *m, nullptr);
  return m->parameters();
}

// The largest element-wise difference between two lists of tensors (weights of two runs).
inline double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

inline std::string bin(const std::string& name) { return std::string(CTRAIN_BIN_DIR) + "/" + name; }

// The first Python that imports `modules` (e.g. "torchvision" or "onnx, google.protobuf"):
// Debian's /usr/bin/python3, else the python3 on PATH (a GPU node's venv has torch there and
// its /usr/bin/python3 has none). Empty when neither does; the caller skips, naming the module.
// $CTRAIN_TEST_PYTHON comes first: `make test-torch2` points it at the PyTorch 2.11 wheel's
// environment, so the parity tests there compare against PyTorch 2.11 (Debian's is 1.13).
// $CTRAIN_CHECKER_PYTHON (`make test` sets it to the same environment) comes last.
inline std::string python_with(const std::string& modules) {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("CTRAIN_TEST_PYTHON"); p != nullptr && *p != '\0') candidates.push_back(p);
  candidates.push_back("/usr/bin/python3");
  candidates.push_back("python3");
  // Last: the wheel's environment for the checkers Debian lacks (onnxruntime, tensorboard).
  if (const char* p = std::getenv("CTRAIN_CHECKER_PYTHON"); p != nullptr && *p != '\0') candidates.push_back(p);
  for (const std::string& py : candidates) {
    if (run_command(py + " -c 'import " + modules + "' 2>/dev/null").exit_code == 0) return py;
  }
  return "";
}

// In CI (CI=true) a missing peer or checker is a failure, never a silent skip.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// `const std::string VAR` = a python3 that imports MODULES; without one the test is skipped,
// or fails in CI, naming what to install (INSTALL).
#define CTRAIN_PYTHON_OR_SKIP(VAR, MODULES, INSTALL)                                             \
  const std::string VAR = ::ctrain::testing::python_with(MODULES);                              \
  if (VAR.empty()) {                                                                             \
    if (::ctrain::testing::in_ci()) FAIL() << "CI=true and no python3 imports " MODULES ": install " INSTALL; \
    GTEST_SKIP() << "no python3 imports " MODULES " (install " INSTALL ")";                      \
  }

// `ctrain-launch --nproc-per-node N` on a fresh port, followed by `rest` (options, program).
inline std::string launch_cmd(int nproc, const std::string& rest) {
  return bin("ctrain-launch") + " --nproc-per-node " + std::to_string(nproc) + " --master-port " +
         std::to_string(free_port()) + " " + rest;
}

// A suite sharing one synthetic MNIST folder (512 train / 100 test images, written once) and a
// fresh output directory per test. mnist(args) is a ctrain-mnist command on that data.
class SyntheticMnistSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir;
    write_synthetic_mnist(data_->path().string(), 512, 100);
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  static std::string mnist_on_data(const std::string& args) {
    return bin("ctrain-mnist") + " --data-folder " + data_->path().string() + " " + args;
  }
  static inline TempDir* data_ = nullptr;
  TempDir out_;
};

}  // namespace ctrain::testing
