#include "core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace ctrain {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Test-only fault injection (issue: crash-safe checkpoints): when CTRAIN_FAULT_ABORT_WRITE_AT
// is set to a fraction in (0,1), the process SIGKILLs itself after writing that share of the
// bytes of the temp file, the way a power cut or `kill -9` would interrupt it.
double fault_abort_fraction() {
  const char* v = std::getenv("CTRAIN_FAULT_ABORT_WRITE_AT");
  return v ? std::atof(v) : 0.0;
}

// `path` is the file being replaced; the bytes go to its temp file.
void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot write " + path + ": " + errno_text() +
                      " (the temp file is removed; any previous " + path + " is unchanged)",
                  "check free disk space and permissions of the output directory");
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string tmp = (dir / ("." + target.filename().string() + ".tmp." +
                                  std::to_string(::getpid())))
                              .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("cannot create " + path + ": " + errno_text() + " (writing its temp file " + tmp + ")",
                "does its directory exist, and is it writable?");
  }
  try {
    const double abort_at = fault_abort_fraction();
    if (abort_at > 0.0 && abort_at < 1.0) {
      const size_t half = static_cast<size_t>(bytes.size() * abort_at);
      write_all(fd, bytes.data(), half, path);
      ::fsync(fd);
      ::kill(::getpid(), SIGKILL);
    }
    write_all(fd, bytes.data(), bytes.size(), path);
    if (::fsync(fd) != 0) throw Error("cannot write " + path + " (fsync): " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + " (close): " + errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path + ": " + err);
  }
  // The rename is durable only once the directory entry is on disk.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + ": " + errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("cannot read " + path + ": " + errno_text());
  return ss.str();
}

void ensure_writable_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error("cannot create output directory " + dir + ": " + ec.message(),
                "pass a writable --output-dir");
  }
  const std::string probe = (fs::path(dir) / (".ctrain-write-test." + std::to_string(::getpid())))
                                .string();
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error("output directory " + dir + " is not writable: " + errno_text(),
                "pass a writable --output-dir");
  }
  ::close(fd);
  ::unlink(probe.c_str());
}


namespace {

// Bytes an unprivileged process can still write in the file system holding `dir`.
uint64_t available_bytes(const std::string& dir) {
  std::error_code ec;
  const auto info = std::filesystem::space(dir, ec);
  if (ec) throw Error("cannot read the free space of " + dir + ": " + ec.message());
  return info.available;
}

}  // namespace

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

uint64_t ensure_free_space(const std::string& dir, uint64_t need, const std::string& what) {
  const uint64_t have = available_bytes(dir);
  if (have < need) {
    throw Error("output directory " + dir + " has " + megabytes(have) + " free, but " + what +
                    " need about " + megabytes(need),
                "free some space or pass another --output-dir");
  }
  return have;
}

}  // namespace ctrain
