#include "tune/sweep.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "tracking/report.h"
#include "tune/sampler.h"

namespace ctrain::tune {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

volatile sig_atomic_t g_sweep_signal = 0;
void on_sweep_signal(int sig) { g_sweep_signal = sig; }

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string trial_name(int64_t t) {
  char b[16];
  std::snprintf(b, sizeof(b), "%03lld", static_cast<long long>(t));
  return b;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.4f", v);
  return b;
}

// An executable regular file: a directory has its x bit too, and execvp fails on it in every
// trial (EACCES), which would make a sweep of failed trials that exits 0.
bool executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Whether `prog` names an executable (a path, or a name on PATH), as execvp will look for it.
bool executable(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return executable_file(prog);
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (executable_file((fs::path(d.empty() ? "." : d) / prog).string())) return true;
  }
  return false;
}

// An owned file descriptor: closed on every path, the error paths included.
class Fd {
 public:
  Fd(const std::string& path, int flags) : fd_(::open(path.c_str(), flags, 0644)) {
    if (fd_ < 0) {
      throw Error("cannot open " + path + ": " + std::strerror(errno), "check that --output-dir is writable");
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { ::close(fd_); }
  int get() const { return fd_; }

 private:
  int fd_;
};

// One trial as the scheduler tracks it.
struct Trial {
  int64_t id = 0;
  nlohmann::json params;
  int64_t rung = 0;             // ASHA: the rung being trained (0 otherwise)
  int64_t epochs = -1;          // --epochs passed (ASHA), -1: the program's own
  std::map<int64_t, double> by_epoch;  // metric per epoch (a re-run epoch overwrites)
  std::streamoff read_offset = 0;
  int64_t lines_read = 0;       // metrics.jsonl lines read so far, for messages
  int64_t bad_lines = 0;        // lines skipped: not a JSON object, no integer epoch, a non-number metric
  int64_t non_finite = 0;       // lines whose metric was NaN or infinite (not recorded)
  pid_t pid = -1;               // running when > 0
  Clock::time_point started{};
  double seconds = 0;           // wall time over all its runs
  bool stopping = false;        // SIGTERM sent by the policy
  Clock::time_point stop_sent{};
  bool killed = false;
  std::string stop_reason;
  int64_t evaluated = 0;        // intervals the policy has looked at
  bool finished = false;
  bool paused = false;          // ASHA: finished a rung, waiting for promotion

  std::vector<double> stream() const {
    std::vector<double> v;
    for (const auto& [e, m] : by_epoch) v.push_back(m);
    return v;
  }
};

class Sweep {
 public:
  Sweep(const SweepConfig& cfg, std::ostream& out)
      : c_(cfg), out_(out), maximize_(cfg.goal == "maximize"), policy_(cfg.policy, maximize_),
        asha_(cfg.policy.name == "asha" ? std::optional<Asha>(Asha(cfg.policy, maximize_)) : std::nullopt),
        dir_(cfg.output_dir), t0_(Clock::now()) {
    for (const auto& p : c_.params) space_.push_back(parse_param(p));
    sampler_ = make_sampler(c_.sampler, space_, static_cast<uint64_t>(c_.seed));
    max_trials_ = c_.max_trials;
    if (sampler_->capacity() >= 0 && sampler_->capacity() < max_trials_) {
      out_ << "ctrain-sweep: the grid has " << sampler_->capacity() << " points; running " << sampler_->capacity()
           << " trials, not " << max_trials_ << "\n";
      max_trials_ = sampler_->capacity();
    }
  }

  int run(bool resume) {
    ensure_writable_dir((dir_ / "trials").string());
    lock_sweep_dir();
    if (resume) {
      restore();
    } else {
      if (fs::exists(dir_ / "journal.jsonl") || fs::exists(dir_ / "sweep.jsonl")) {
        throw ConfigError("--output-dir " + dir_.string() + " already holds a sweep",
                          "continue it with --resume, or choose another --output-dir");
      }
      write_file_atomic((dir_ / "config.json").string(), json_dump(c_.to_json(), 2) + "\n");
    }
    journal_.open(dir_ / "journal.jsonl", std::ios::app);
    if (!journal_) throw Error("cannot open " + (dir_ / "journal.jsonl").string() + " for appending");
    out_ << "ctrain-sweep: " << max_trials_ << " trials of " << c_.program << ", " << c_.max_concurrent
         << " at a time, sampler " << c_.sampler << ", policy " << c_.policy.name << ", " << c_.goal << " "
         << c_.metric << " -> " << dir_.string() << "\n"
         << std::flush;
    const int code = loop();
    if (code != 0) return code;
    finish_outputs();
    return 0;
  }

 private:
  // ---- state on disk -----------------------------------------------------------------------
  void lock_sweep_dir() {
    lock_.emplace((dir_ / ".lock").string(), O_CREAT | O_RDWR | O_CLOEXEC);  // held until the sweep ends
    if (::flock(lock_->get(), LOCK_EX | LOCK_NB) != 0) {
      throw Error("another ctrain-sweep is running in " + dir_.string(), "wait for it, or stop it first");
    }
  }

  void journal(const nlohmann::json& j) {
    journal_ << json_dump(j) << std::endl;
    if (!journal_) throw Error("cannot append to " + (dir_ / "journal.jsonl").string() + ": " + std::strerror(errno));
  }

  // Rebuilds the scheduler's state from journal.jsonl, sweep.jsonl and the trials' metrics.
  void restore() {
    try {
      restore_records();
    } catch (const nlohmann::json::exception& e) {  // a record without its fields, or of the wrong type
      throw Error("--resume: " + dir_.string() + " holds a malformed journal.jsonl or sweep.jsonl record: " +
                      printable(e.what()),
                  "that sweep cannot be continued; start a new one in another --output-dir");
    }
  }

  void restore_records() {
    if (!fs::exists(dir_ / "journal.jsonl")) {
      throw Error("--resume: " + dir_.string() + " holds no sweep (no journal.jsonl)",
                  "start it without --resume");
    }
    // A sweep killed mid-append leaves a torn last line: that event did not happen.
    for (const auto& e : tracking::read_jsonl((dir_ / "journal.jsonl").string(), /*allow_torn_last_line=*/true)) {
      const int64_t id = e.at("trial").get<int64_t>();
      const std::string ev = e.at("event").get<std::string>();
      Trial& t = trials_[id];
      t.id = id;
      if (ev == "start") {
        t.params = e.at("params");
        t.rung = e.value("rung", int64_t{0});
        t.epochs = e.value("epochs", int64_t{-1});
        t.paused = false;
        if (asha_ && t.rung > 0) asha_->mark_promoted(id, t.rung);
        next_index_ = std::max(next_index_, id + 1);
      } else if (ev == "rung" && asha_) {
        asha_->report(id, e.at("rung").get<int64_t>(), e.at("value").get<double>());
        t.paused = true;
      } else if (ev == "seconds") {
        t.seconds = e.at("seconds").get<double>();
      }
    }
    const fs::path finished = dir_ / "sweep.jsonl";  // absent until a trial finishes
    for (const auto& r : fs::exists(finished) ? tracking::read_jsonl(finished.string(), true)
                                              : std::vector<nlohmann::json>{}) {
      const int64_t id = r.at("trial").get<int64_t>();
      trials_[id].finished = true;
      trials_[id].seconds = r.value("seconds", 0.0);
      finished_order_.push_back(id);
      records_[id] = r;
    }
    for (auto& [id, t] : trials_) {
      read_metrics(t);
      if (!t.finished && !t.paused) pending_restart_.push_back(id);
    }
    int64_t done = static_cast<int64_t>(finished_order_.size());
    out_ << "ctrain-sweep: resuming " << dir_.string() << ": " << done << " finished, " << pending_restart_.size()
         << " to continue from their checkpoints, " << (max_trials_ - next_index_) << " still to start\n";
  }

  // ---- trials ------------------------------------------------------------------------------
  fs::path trial_dir(int64_t id) const { return dir_ / "trials" / trial_name(id); }

  std::vector<std::string> command(const Trial& t, bool resume) const {
    std::vector<std::string> argv = split_words(c_.program);
    argv.insert(argv.end(), c_.args.begin(), c_.args.end());
    for (const Param& p : space_) {
      argv.push_back("--" + p.name);
      argv.push_back(format_value(t.params.at(p.name)));
    }
    argv.push_back("--output-dir");
    argv.push_back(trial_dir(t.id).string());
    if (t.epochs > 0) {
      argv.push_back("--epochs");
      argv.push_back(std::to_string(t.epochs));
    }
    if (resume) argv.push_back("--resume");
    return argv;
  }

  // Starts the trial's process in its own process group, output to trials/NNN/log.txt. The
  // child holds an flock on trials/NNN/.lock (inherited across exec), so a resumed sweep waits
  // until no process of an earlier run still writes there; it dies with the sweep
  // (PR_SET_PDEATHSIG), which a launcher forwards to its ranks.
  void spawn(Trial& t, bool resume) {
    const fs::path d = trial_dir(t.id);
    fs::create_directories(d);
    const std::string lock_path = (d / ".lock").string();
    const Fd lock(lock_path, O_CREAT | O_RDWR);  // no CLOEXEC: the child keeps it across exec
    const auto deadline = Clock::now() + std::chrono::duration<double>(c_.stop_grace_s + 5);
    while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
      if (Clock::now() > deadline) {
        throw Error("trial " + trial_name(t.id) + " is still running from an earlier sweep (" + lock_path + " is locked)",
                    "stop that process, then --resume again");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const Fd log((d / "log.txt").string(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC);
    const std::vector<std::string> argv = command(t, resume);
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    line = "$ " + line + "\n";
    (void)!::write(log.get(), line.data(), line.size());
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);

    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::dup2(log.get(), STDOUT_FILENO);
      ::dup2(log.get(), STDERR_FILENO);
      ::execvp(cargv[0], cargv.data());
      const std::string err = std::string("ctrain-sweep: cannot run ") + cargv[0] + ": " + std::strerror(errno) + "\n";
      (void)!::write(STDERR_FILENO, err.data(), err.size());
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here, so a signal sent right away reaches the group
    // The parent's copies of both descriptors close here; the child's copy keeps the lock.
    t.pid = pid;
    t.started = Clock::now();
    t.stopping = t.killed = false;
    t.paused = false;
    ++running_;
  }

  void start_new() {
    const int64_t id = next_index_++;
    Trial& t = trials_[id];
    t.id = id;
    t.params = sampler_->propose(id, observations());
    if (asha_) {
      t.rung = 0;
      t.epochs = asha_->budget(0);
    }
    journal({{"event", "start"}, {"trial", id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
    out_ << "trial " << trial_name(id) << " started: " << json_dump(t.params)
         << (t.epochs > 0 ? " (" + std::to_string(t.epochs) + " epochs)" : "") << "\n" << std::flush;
    spawn(t, false);
  }

  // What the sampler learns from: trials not running that reported the metric, in trial order
  // (so the history does not depend on which finished first), loss = -metric when maximising.
  std::vector<Observation> observations() const {
    std::vector<Observation> obs;
    for (const auto& [id, t] : trials_) {
      if (t.pid > 0 || t.by_epoch.empty() || !(t.finished || t.paused)) continue;
      const double b = best(t);
      obs.push_back({t.params, maximize_ ? -b : b});
    }
    return obs;
  }

  double best(const Trial& t) const {
    double b = t.by_epoch.begin()->second;
    for (const auto& [e, v] : t.by_epoch) b = maximize_ ? std::max(b, v) : std::min(b, v);
    return b;
  }

  // A line of a trial's metrics.jsonl that was left out, on the sweep's output: the first few
  // per trial, so a trainer writing garbage every epoch does not flood it.
  void skip_line(Trial& t, const std::string& why) {
    ++t.bad_lines;
    if (t.bad_lines <= 5) out_ << "ctrain-sweep: trial " << trial_name(t.id) << ": skipped " << why << "\n";
    if (t.bad_lines == 5) out_ << "ctrain-sweep: trial " << trial_name(t.id) << ": further skipped lines not shown\n";
    out_ << std::flush;
  }

  // Reads the complete lines appended to the trial's metrics.jsonl since the last read. The
  // trainer is a program from outside: a line that is not a JSON object, has an epoch that is
  // not an integer or a metric that is not a number is skipped and reported naming the trial,
  // the file and the line; a NaN or infinite metric is counted, not recorded. Only a metric
  // that no line has at all stops the sweep (--metric names the wrong field).
  void read_metrics(Trial& t) {
    const fs::path p = trial_dir(t.id) / "metrics.jsonl";
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
        skip_line(t, e.what());
        continue;
      }
      if (!j.contains(c_.metric)) {
        std::string names;
        for (auto it = j.begin(); it != j.end(); ++it) names += (names.empty() ? "" : ", ") + printable(it.key());
        fatal_ = "--metric " + c_.metric + ": trial " + trial_name(t.id) + "'s " + where +
                 " has no such field; it writes: " + names;
        t.read_offset += static_cast<std::streamoff>(start);
        return;
      }
      const nlohmann::json& m = j[c_.metric];
      if (!m.is_null() && !m.is_number()) {
        skip_line(t, where + ": " + c_.metric + " is not a number: " + printable(json_dump(m).substr(0, 80)));
        continue;
      }
      int64_t epoch = static_cast<int64_t>(t.by_epoch.size());
      if (j.contains("epoch")) {
        if (!j["epoch"].is_number_integer()) {
          skip_line(t, where + ": epoch is not an integer: " + printable(json_dump(j["epoch"]).substr(0, 80)));
          continue;
        }
        epoch = j["epoch"].get<int64_t>();
      }
      // null is how nlohmann (and so a ctrain trainer) writes NaN; Python's NaN reads as null.
      const double v = m.is_null() ? std::nan("") : m.get<double>();
      if (!std::isfinite(v)) {
        ++t.non_finite;
        out_ << "ctrain-sweep: trial " << trial_name(t.id) << ": " << c_.metric << " is " << (std::isnan(v) ? "NaN" : "infinite")
             << " at epoch " << epoch << " (" << where << ")\n" << std::flush;
        continue;
      }
      t.by_epoch[epoch] = v;
    }
    t.read_offset += static_cast<std::streamoff>(start);
  }

  // Why a trial that exited 0 has no value of the metric, when its metrics.jsonl had lines:
  // "" when it had none at all.
  std::string no_metric_reason(const Trial& t) const {
    const std::string file = printable((trial_dir(t.id) / "metrics.jsonl").string());
    if (t.non_finite > 0) {
      return c_.metric + " was NaN or infinite in every line that had it (" + std::to_string(t.non_finite) + ", in " +
             file + "): the run diverged?";
    }
    if (t.bad_lines > 0) return "all " + std::to_string(t.bad_lines) + " lines of " + file + " were malformed";
    return "";
  }

  // The policy's decision on the intervals the trial reported since it last looked, each in
  // order (advancing t.evaluated): true at the first that says stop, with t.stop_reason set and
  // the decision printed. Both the poll and the trial's exit ask it, so a stop at the trial's
  // last epoch does not depend on which of them reads that epoch first.
  bool policy_stops(Trial& t) {
    if (c_.policy.name == "none" || asha_) return false;
    if (t.evaluated >= static_cast<int64_t>(t.by_epoch.size())) return false;  // no new interval
    const std::vector<double> mine = t.stream();
    Streams streams;
    for (const auto& [id, o] : trials_) {
      if (id != t.id && !o.by_epoch.empty()) streams[id] = o.stream();
    }
    for (int64_t n = t.evaluated + 1; n <= static_cast<int64_t>(mine.size()); ++n) {
      t.evaluated = n;
      if (!policy_.due(n)) continue;
      streams[t.id] = std::vector<double>(mine.begin(), mine.begin() + n);
      const Decision d = policy_.decide(t.id, streams);
      if (!d.stop) continue;
      t.stop_reason = c_.policy.name + " at interval " + std::to_string(n) + ": " + d.reason;
      // The epoch of interval n, not the last one read: how many lines one poll reads is timing.
      out_ << "trial " << trial_name(t.id) << " stopped at epoch " << std::next(t.by_epoch.begin(), n - 1)->first
           << ": " << d.reason << "\n" << std::flush;
      return true;
    }
    return false;
  }

  void apply_policy(Trial& t) {
    if (!t.stopping && policy_stops(t)) stop(t);
  }

  void stop(Trial& t) {
    if (t.pid <= 0 || t.stopping) return;
    t.stopping = true;
    t.stop_sent = Clock::now();
    ::kill(-t.pid, SIGTERM);
  }

  // A trial's process ended with `status` (waitpid's).
  void on_exit(Trial& t, int status) {
    t.pid = -1;
    --running_;
    t.seconds += std::chrono::duration<double>(Clock::now() - t.started).count();
    journal({{"event", "seconds"}, {"trial", t.id}, {"seconds", t.seconds}});
    read_metrics(t);
    if (interrupted_) return;  // the sweep itself is stopping: --resume continues this trial
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (t.stopping) {
      record(t, "early_terminated", t.stop_reason, code);
      return;
    }
    // A trial that wrote its last epoch and exited before the next poll: the policy decides on
    // what it read only now, as the poll would have (then it was stopped as it was finishing).
    // A resumed sweep replays the same decisions: a restored trial's intervals are evaluated
    // afresh, from its whole metrics.jsonl, against the same finished trials.
    if (code == 0 && fatal_.empty() && policy_stops(t)) {
      record(t, "early_terminated", t.stop_reason, code);
      return;
    }
    if (code == 0 && asha_ && t.rung + 1 < asha_->rungs()) {
      if (t.by_epoch.empty()) {
        const std::string why = no_metric_reason(t);
        record(t, "failed", why.empty() ? "exit code 0 but no " + c_.metric + " in its metrics.jsonl" : why, code);
        return;
      }
      // Its value at the rung: the metric of the last epoch it trained.
      const double v = t.by_epoch.rbegin()->second;
      asha_->report(t.id, t.rung, v);
      t.paused = true;
      journal({{"event", "rung"}, {"trial", t.id}, {"rung", t.rung}, {"value", v}});
      out_ << "trial " << trial_name(t.id) << " paused at rung " << t.rung << " (" << t.epochs << " epochs): "
           << c_.metric << " " << fmt(v) << "\n" << std::flush;
      return;
    }
    if (code == 0) {
      if (t.by_epoch.empty()) {
        // NaN values or malformed lines are this trial's failure; no line at all, every trial's.
        if (const std::string why = no_metric_reason(t); !why.empty()) {
          record(t, "failed", why, code);
          return;
        }
        // read_metrics may already have said why (lines without the field, read only now when
        // the trial ended before the next poll): that reason is the more useful one.
        if (fatal_.empty()) {
          fatal_ = "--metric " + c_.metric + ": trial " + trial_name(t.id) + " finished without writing " +
                   (trial_dir(t.id) / "metrics.jsonl").string();
        }
        return;
      }
      record(t, "completed", "", code);
      return;
    }
    const std::string last = last_line(trial_dir(t.id) / "log.txt");
    if (code == 2 && finished_order_.empty()) {
      // The first trial to end refused its arguments. Unless it names a sampled flag (a value
      // this trial drew, such as a negative learning rate), every trial would: stop here.
      bool sampled = false;
      for (const Param& p : space_) sampled = sampled || last.find("--" + p.name) != std::string::npos;
      if (!sampled) fatal_ = "trial " + trial_name(t.id) + " exited 2 (usage): " + last;
    }
    record(t, "failed", "exit code " + std::to_string(code) + ": " + last, code);
  }

  static std::string last_line(const fs::path& p) {
    std::ifstream in(p);
    std::string line, last;
    while (std::getline(in, line)) {
      if (!line.empty()) last = line;
    }
    return last;
  }

  void record(Trial& t, const std::string& status, const std::string& reason, int code) {
    t.finished = true;
    t.paused = false;
    nlohmann::json r = {{"trial", t.id},
                        {"params", t.params},
                        {"status", status},
                        {"best_metric", t.by_epoch.empty() ? nlohmann::json(nullptr) : nlohmann::json(best(t))},
                        {"epochs_run", static_cast<int64_t>(t.by_epoch.size())},
                        {"seconds", std::round(t.seconds * 1000) / 1000},
                        {"exit_code", code}};
    if (!reason.empty()) r["reason"] = reason;
    records_[t.id] = r;
    finished_order_.push_back(t.id);
    std::ofstream s(dir_ / "sweep.jsonl", std::ios::app);
    s << json_dump(r) << std::endl;
    if (!s) throw Error("cannot append to " + (dir_ / "sweep.jsonl").string() + ": " + std::strerror(errno));
    write_best();
    if (status != "early_terminated") {
      out_ << "trial " << trial_name(t.id) << " " << status
           << (t.by_epoch.empty() ? "" : ": best " + c_.metric + " " + fmt(best(t))) << " after "
           << t.by_epoch.size() << " epochs" << (reason.empty() ? "" : " (" + reason + ")") << "\n";
    }
    progress(true);
  }

  std::optional<int64_t> best_trial() const {
    std::optional<int64_t> b;
    for (const auto& [id, r] : records_) {
      if (!r["best_metric"].is_number()) continue;
      const double v = r["best_metric"].get<double>();
      if (!b || (maximize_ ? v > records_.at(*b)["best_metric"].get<double>()
                           : v < records_.at(*b)["best_metric"].get<double>())) {
        b = id;
      }
    }
    return b;
  }

  void write_best() {
    if (const auto b = best_trial()) write_file_atomic((dir_ / "best.json").string(), json_dump(records_.at(*b), 2) + "\n");
  }

  void progress(bool force) {
    const auto now = Clock::now();
    if (!force && now - last_progress_ < std::chrono::seconds(10)) return;
    last_progress_ = now;
    int64_t stopped = 0, failed = 0;
    for (const auto& [id, r] : records_) {
      stopped += r["status"] == "early_terminated";
      failed += r["status"] == "failed";
    }
    std::ostringstream line;
    line << "[sweep " << std::fixed << std::setprecision(0)
         << std::chrono::duration<double>(now - t0_).count() << "s] " << records_.size() << "/" << max_trials_
         << " finished (" << stopped << " stopped early, " << failed << " failed), " << running_ << " running";
    for (const auto& [id, t] : trials_) {
      if (t.pid > 0 && !t.by_epoch.empty()) {
        line << "; trial " << trial_name(id) << " epoch " << t.by_epoch.rbegin()->first << " " << fmt(t.by_epoch.rbegin()->second);
      }
    }
    if (const auto b = best_trial()) {
      line << "; best " << c_.metric << " " << fmt(records_.at(*b)["best_metric"].get<double>()) << " (trial "
           << trial_name(*b) << ")";
    }
    out_ << line.str() << "\n" << std::flush;
  }

  // ---- the loop ----------------------------------------------------------------------------
  int loop() {
    for (;;) {
      // Reap every trial that ended.
      for (;;) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        for (auto& [id, t] : trials_) {
          if (t.pid == pid) on_exit(t, status);
        }
      }
      for (auto& [id, t] : trials_) {
        if (t.pid <= 0) continue;
        read_metrics(t);
        if (!fatal_.empty()) break;
        apply_policy(t);
        if (t.stopping && !t.killed && Clock::now() - t.stop_sent > std::chrono::duration<double>(c_.stop_grace_s)) {
          out_ << "trial " << trial_name(id) << " did not stop within " << c_.stop_grace_s << " s: SIGKILL\n";
          ::kill(-t.pid, SIGKILL);
          t.killed = true;
        }
      }
      if (!fatal_.empty() || g_sweep_signal != 0) return shut_down();
      // Fill free slots: restarts of interrupted trials first, then ASHA promotions, then new trials.
      while (running_ < c_.max_concurrent) {
        if (!pending_restart_.empty()) {
          Trial& t = trials_.at(pending_restart_.front());
          pending_restart_.erase(pending_restart_.begin());
          out_ << "trial " << trial_name(t.id) << " continues from its checkpoint\n";
          journal({{"event", "start"}, {"trial", t.id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
          spawn(t, true);
          continue;
        }
        if (asha_) {
          if (auto p = asha_->promote()) {
            Trial& t = trials_.at(p->trial);
            t.rung = p->rung;
            t.epochs = asha_->budget(p->rung);
            journal({{"event", "start"}, {"trial", t.id}, {"params", t.params}, {"rung", t.rung}, {"epochs", t.epochs}});
            out_ << "trial " << trial_name(t.id) << " promoted: " << p->reason << "\n" << std::flush;
            spawn(t, true);
            continue;
          }
        }
        if (next_index_ < max_trials_) {
          start_new();
          continue;
        }
        break;
      }
      if (running_ == 0) break;
      progress(false);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    // ASHA: trials left at a lower rung were stopped early by the schedule.
    if (asha_) {
      for (int64_t id : asha_->paused()) {
        Trial& t = trials_.at(id);
        if (!t.finished) record(t, "early_terminated", asha_->paused_reason(id), 0);
      }
    }
    return 0;
  }

  // Stops every running trial (SIGTERM, SIGKILL after the grace) and returns the exit code.
  int shut_down() {
    interrupted_ = true;
    for (auto& [id, t] : trials_) {
      if (t.pid > 0) ::kill(-t.pid, SIGTERM);
    }
    const auto t_stop = Clock::now();
    bool killed = false;
    while (running_ > 0) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid > 0) {
        for (auto& [id, t] : trials_) {
          if (t.pid == pid) on_exit(t, status);
        }
        continue;
      }
      if (!killed && Clock::now() - t_stop > std::chrono::duration<double>(c_.stop_grace_s)) {
        for (auto& [id, t] : trials_) {
          if (t.pid > 0) ::kill(-t.pid, SIGKILL);
        }
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!fatal_.empty()) {
      out_ << std::flush;
      throw ConfigError(fatal_, "the trials' logs are in " + (dir_ / "trials").string() + "/NNN/log.txt");
    }
    out_ << "ctrain-sweep: stopped by signal " << g_sweep_signal << "; continue with --resume --output-dir "
         << dir_.string() << "\n";
    return 128 + g_sweep_signal;
  }

  void finish_outputs() {
    // The table, best first.
    std::vector<int64_t> ids = finished_order_;
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) {
      const auto& x = records_.at(a)["best_metric"];
      const auto& y = records_.at(b)["best_metric"];
      if (x.is_number() != y.is_number()) return x.is_number();
      if (!x.is_number()) return a < b;
      return maximize_ ? x.get<double>() > y.get<double>() : x.get<double>() < y.get<double>();
    });
    out_ << "\n trial  status            " << std::setw(14) << c_.metric << "  epochs  seconds  params\n";
    for (int64_t id : ids) {
      const auto& r = records_.at(id);
      out_ << "   " << trial_name(id) << "  " << std::left << std::setw(16) << r["status"].get<std::string>()
           << std::right << "  " << std::setw(14)
           << (r["best_metric"].is_number() ? fmt(r["best_metric"].get<double>()) : std::string("-")) << "  "
           << std::setw(6) << r["epochs_run"].get<int64_t>() << "  " << std::setw(7) << std::fixed
           << std::setprecision(1) << r["seconds"].get<double>() << "  " << json_dump(r["params"]) << "\n";
    }
    if (const auto b = best_trial()) {
      out_ << "best: trial " << trial_name(*b) << " " << c_.metric << " "
           << fmt(records_.at(*b)["best_metric"].get<double>()) << " " << json_dump(records_.at(*b)["params"])
           << " (" << (dir_ / "best.json").string() << ")\n";
    }
    try {
      out_ << "report: " << tracking::write_sweep_report(dir_.string(), c_.metric, c_.goal) << "\n";
    } catch (const std::exception& e) {
      out_ << "ctrain-sweep: warning: no report.html: " << e.what() << "\n";
    }
    out_ << std::flush;
  }

  SweepConfig c_;
  std::ostream& out_;
  bool maximize_;
  StopPolicy policy_;
  std::optional<Asha> asha_;
  fs::path dir_;
  Space space_;
  std::unique_ptr<Sampler> sampler_;
  int64_t max_trials_ = 0;
  std::map<int64_t, Trial> trials_;
  std::map<int64_t, nlohmann::json> records_;
  std::vector<int64_t> finished_order_;
  std::vector<int64_t> pending_restart_;
  int64_t next_index_ = 0;
  int64_t running_ = 0;
  std::ofstream journal_;
  std::optional<Fd> lock_;
  std::string fatal_;
  bool interrupted_ = false;
  Clock::time_point t0_, last_progress_{};
};

}  // namespace

void SweepConfig::validate() const {
  const auto words = split_words(program);
  if (words.empty()) throw ConfigError("--program is required: the trainer to run per trial (build/bin/ctrain-mnist)");
  if (!executable(words[0])) {
    throw ConfigError("--program " + words[0] + ": not found or not executable", "give a path such as build/bin/ctrain-mnist");
  }
  if (goal != "maximize" && goal != "minimize") throw ConfigError("--goal must be maximize or minimize, got '" + goal + "'");
  if (metric.empty()) throw ConfigError("--metric must not be empty");
  if (max_trials < 1) throw ConfigError("--max-trials must be at least 1");
  if (max_concurrent < 1) throw ConfigError("--max-concurrent must be at least 1");
  if (!(stop_grace_s > 0) || !std::isfinite(stop_grace_s)) throw ConfigError("--stop-grace must be a positive number of seconds");
  if (output_dir.empty()) throw ConfigError("--output-dir must not be empty");
  if (params.empty()) throw ConfigError("--param is required: at least one NAME=EXPRESSION to search");
  Space space;
  std::set<std::string> names;
  for (const auto& p : params) {
    space.push_back(parse_param(p));
    if (!names.insert(space.back().name).second) throw ConfigError("--param " + space.back().name + " is given twice");
  }
  make_sampler(sampler, space, static_cast<uint64_t>(seed));  // an unknown sampler, a grid over non-choices
  policy.validate();
  // Flags the sweep sets itself must not come from the fixed arguments too.
  for (const auto& a : args) {
    std::string flag = a.substr(0, a.find('='));
    if (flag == "--output-dir" || flag == "--output_dir") {
      throw ConfigError("the arguments after -- set " + flag + ": the sweep gives each trial its own (SWEEP_DIR/trials/NNN)");
    }
    if (policy.name == "asha" && (flag == "--epochs" || flag == "--num-epochs" || flag == "--num_epochs")) {
      throw ConfigError("the arguments after -- set " + flag + ": with --policy asha the sweep sets --epochs per rung",
                        "use --max-epochs for the last rung's epochs");
    }
    for (const auto& n : names) {
      if (flag == "--" + n) throw ConfigError("the arguments after -- set " + flag + ", which --param " + n + " samples");
    }
  }
}

// config.json: every setting but output_dir (a resumed sweep is wherever it is now).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PolicyConfig, name, slack_factor, slack_amount, evaluation_interval,
                                   delay_evaluation, truncation_percentage, grace_period, reduction_factor,
                                   max_epochs)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SweepConfig, program, args, metric, goal, max_trials, max_concurrent, sampler,
                                   seed, params, policy, stop_grace_s)

nlohmann::json SweepConfig::to_json() const { return *this; }

SweepConfig SweepConfig::from_json(const nlohmann::json& j) {
  try {
    return j.get<SweepConfig>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("a sweep's config.json is incomplete or malformed: ") + e.what());
  }
}

int run_sweep(const SweepConfig& cfg, bool resume, std::ostream& out) {
  Sweep s(cfg, out);
  return s.run(resume);
}

void install_sweep_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_sweep_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace ctrain::tune
