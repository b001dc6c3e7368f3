#include "tune/trial.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "core/json.h"
#include "tracking/jsonl.h"

namespace ctrain::tune {

namespace fs = std::filesystem;

std::vector<double> Trial::stream() const {
  std::vector<double> v;
  for (const auto& [e, m] : by_epoch) v.push_back(m);
  return v;
}

double Trial::best(bool maximize) const {
  double b = by_epoch.begin()->second;
  for (const auto& [e, v] : by_epoch) b = maximize ? std::max(b, v) : std::min(b, v);
  return b;
}

std::string trial_name(int64_t id) {
  char b[16];
  std::snprintf(b, sizeof(b), "%03lld", static_cast<long long>(id));
  return b;
}

std::string format_metric(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.4f", v);
  return b;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

namespace {

// A line of a trial's metrics.jsonl that was left out, on the sweep's output: the first few
// per trial, so a trainer writing garbage every epoch does not flood it.
void skip_line(Trial& t, const std::string& why, std::ostream& out) {
  ++t.bad_lines;
  if (t.bad_lines <= 5) out << "ctrain-sweep: trial " << trial_name(t.id) << ": skipped " << why << "\n";
  if (t.bad_lines == 5) out << "ctrain-sweep: trial " << trial_name(t.id) << ": further skipped lines not shown\n";
  out << std::flush;
}

}  // namespace

void read_metrics(Trial& t, const fs::path& p, const std::string& metric, std::ostream& out, std::string& fatal) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return;  // not yet written (a FIFO would block the sweep)
  std::ifstream in(p, std::ios::binary);
  if (!in) return;
  in.seekg(t.read_offset);
  std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t start = 0;
  for (size_t nl; (nl = chunk.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = chunk.substr(start, nl - start);
    ++t.lines_read;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = printable(p.string()) + ":" + std::to_string(t.lines_read);
    nlohmann::json j;
    try {
      j = tracking::parse_jsonl_line(line, where);
    } catch (const Error& e) {
      skip_line(t, e.what(), out);
      continue;
    }
    if (!j.contains(metric)) {
      std::string names;
      for (auto it = j.begin(); it != j.end(); ++it) names += (names.empty() ? "" : ", ") + printable(it.key());
      fatal = "--metric " + metric + ": trial " + trial_name(t.id) + "'s " + where +
               " has no such field; it writes: " + names;
      t.read_offset += static_cast<std::streamoff>(start);
      return;
    }
    const nlohmann::json& m = j[metric];
    if (!m.is_null() && !m.is_number()) {
      skip_line(t, where + ": " + metric + " is not a number: " + printable(json_dump(m).substr(0, 80)), out);
      continue;
    }
    int64_t epoch = static_cast<int64_t>(t.by_epoch.size());
    if (j.contains("epoch")) {
      if (!j["epoch"].is_number_integer()) {
        skip_line(t, where + ": epoch is not an integer: " + printable(json_dump(j["epoch"]).substr(0, 80)), out);
        continue;
      }
      epoch = j["epoch"].get<int64_t>();
    }
    // null is how nlohmann (and so a ctrain trainer) writes NaN; Python's NaN reads as null.
    const double v = m.is_null() ? std::nan("") : m.get<double>();
    if (!std::isfinite(v)) {
      ++t.non_finite;
      out << "ctrain-sweep: trial " << trial_name(t.id) << ": " << metric << " is " << (std::isnan(v) ? "NaN" : "infinite")
           << " at epoch " << epoch << " (" << where << ")\n" << std::flush;
      continue;
    }
    t.by_epoch[epoch] = v;
  }
  t.read_offset += static_cast<std::streamoff>(start);
}

std::string no_metric_reason(const Trial& t, const std::string& file, const std::string& metric) {
  if (t.non_finite > 0) {
    return metric + " was NaN or infinite in every line that had it (" + std::to_string(t.non_finite) + ", in " +
           file + "): the run diverged?";
  }
  if (t.bad_lines > 0) return "all " + std::to_string(t.bad_lines) + " lines of " + file + " were malformed";
  return "";
}

namespace {

// An owned file descriptor: closed on every path, the error paths included.
class OpenFile {
 public:
  OpenFile(const std::string& path, int flags) : fd_(::open(path.c_str(), flags, 0644)) {
    if (fd_ < 0) {
      throw Error("cannot open " + path + ": " + std::strerror(errno), "check that --output-dir is writable");
    }
  }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  ~OpenFile() { ::close(fd_); }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

void start_process(Trial& t, const fs::path& dir, const std::vector<std::string>& argv, double lock_wait_s) {
  fs::create_directories(dir);
  const std::string lock_path = (dir / ".lock").string();
  const OpenFile lock(lock_path, O_CREAT | O_RDWR);  // no CLOEXEC: the child keeps it across exec
  const auto deadline = Clock::now() + std::chrono::duration<double>(lock_wait_s);
  while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (Clock::now() > deadline) {
      throw Error("trial " + trial_name(t.id) + " is still running from an earlier sweep (" + lock_path + " is locked)",
                  "stop that process, then --resume again");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const OpenFile log((dir / "log.txt").string(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC);
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  line = "$ " + line + "\n";
  (void)!::write(log.get(), line.data(), line.size());
  SpawnOptions so;
  so.output_fd = log.get();
  so.death_signal = SIGTERM;  // a launcher forwards it to its ranks
  so.who = "ctrain-sweep";
  t.process = Process::spawn(argv, so);
  // The parent's copies of both descriptors close here; the child's copy keeps the lock.
  t.started = Clock::now();
  t.stopping = t.killed = false;
  t.paused = false;
}

std::string last_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

}  // namespace ctrain::tune
