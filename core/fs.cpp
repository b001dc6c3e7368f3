#include "core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/json.h"

namespace ctrain {
namespace {

std::string errno_text() { return std::strerror(errno); }

// set_write_interruption's: a fraction and what to do there; none by default.
double g_interrupt_fraction = 0.0;
void (*g_interrupt_action)() = nullptr;

}  // namespace

void set_write_interruption(double fraction, void (*action)()) {
  const bool on = fraction > 0.0 && fraction < 1.0 && action != nullptr;
  g_interrupt_fraction = on ? fraction : 0.0;
  g_interrupt_action = on ? action : nullptr;
}

namespace {

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
    size_t done = 0;
    if (g_interrupt_action != nullptr) {
      done = static_cast<size_t>(static_cast<double>(bytes.size()) * g_interrupt_fraction);
      write_all(fd, bytes.data(), done, path);
      ::fsync(fd);
      g_interrupt_action();
    }
    write_all(fd, bytes.data() + done, bytes.size() - done, path);
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

namespace {

// "a directory", "a FIFO"...: what a path that is not a regular file is, for messages.
std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string not_regular(const std::string& path, mode_t mode, const std::string& what) {
  return (what.empty() ? "" : what + " ") + printable(path) + " is " + file_kind(mode) + ", not a regular file";
}

}  // namespace

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error((what.empty() ? "" : what + " ") + "cannot open " + printable(path) + ": " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) throw Error(not_regular(path, st.st_mode, what), "pass a regular file");
}

namespace {

// An open descriptor of a regular file. O_NONBLOCK: opening a FIFO returns at once instead of
// waiting for a writer; fstat on the open descriptor then decides, so the file checked is the
// file read. `missing_ok`: fd is -1 for a file that does not exist.
struct RegularFile {
  RegularFile(const std::string& path, int flags, bool missing_ok = false) {
    fd = ::open(path.c_str(), flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
      if (missing_ok && errno == ENOENT) return;
      throw Error("cannot open " + printable(path) + ": " + errno_text());
    }
    if (::fstat(fd, &st) != 0) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error("cannot read " + printable(path) + ": " + why);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(not_regular(path, st.st_mode, ""), "pass a regular file");
    }
  }
  ~RegularFile() {
    if (fd >= 0) ::close(fd);
  }
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  int fd = -1;
  struct stat st {};
};

}  // namespace

std::string read_file(const std::string& path, uint64_t max_bytes) {
  const RegularFile file(path, O_RDONLY);
  const int fd = file.fd;
  const struct stat& st = file.st;
  const auto too_big = [&](uint64_t size) {
    return Error(printable(path) + " is " + megabytes(size) + " or more, above the " + megabytes(max_bytes) +
                     " this reader accepts",
                 "is it the file you meant?");
  };
  if (static_cast<uint64_t>(st.st_size) > max_bytes) throw too_big(static_cast<uint64_t>(st.st_size));
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  // Read to EOF rather than st_size bytes: /proc files report 0 and a file may grow; the cap
  // still holds.
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + printable(path) + ": " + errno_text());
    }
    if (out.size() + static_cast<size_t>(n) > max_bytes) throw too_big(out.size() + static_cast<size_t>(n));
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

uint64_t drop_torn_last_line(const std::string& path) {
  const RegularFile file(path, O_RDWR, /*missing_ok=*/true);
  if (file.fd < 0) return 0;
  const int fd = file.fd;
  const struct stat& st = file.st;
  // Scan back from the end for the last newline, a block at a time.
  const off_t size = st.st_size;
  off_t end = size;
  char buf[4096];
  while (end > 0) {
    const off_t begin = end > static_cast<off_t>(sizeof(buf)) ? end - static_cast<off_t>(sizeof(buf)) : 0;
    const ssize_t n = ::pread(fd, buf, static_cast<size_t>(end - begin), begin);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error("cannot read " + printable(path) + ": " + errno_text());
    }
    if (n == 0) break;
    for (ssize_t i = n - 1; i >= 0; --i) {
      if (buf[i] != '\n') continue;
      const off_t keep = begin + i + 1;
      if (keep == size) return 0;
      if (::ftruncate(fd, keep) != 0) throw Error("cannot truncate " + printable(path) + ": " + errno_text());
      return static_cast<uint64_t>(size - keep);
    }
    end = begin;
  }
  if (size == 0) return 0;
  if (::ftruncate(fd, 0) != 0) throw Error("cannot truncate " + printable(path) + ": " + errno_text());
  return static_cast<uint64_t>(size);
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
