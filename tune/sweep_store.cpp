#include "tune/sweep_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "tracking/jsonl.h"
#include "tune/sweep.h"
#include "tune/trial.h"

namespace ctrain::tune {

namespace fs = std::filesystem;

SweepStore::SweepStore(fs::path dir) : dir_(std::move(dir)) {}

SweepStore::~SweepStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void SweepStore::lock() {
  ensure_writable_dir((dir_ / "trials").string());
  const std::string path = (dir_ / ".lock").string();
  lock_fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);  // held until the sweep ends
  if (lock_fd_ < 0) {
    throw Error("cannot open " + path + ": " + std::strerror(errno), "check that --output-dir is writable");
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    throw Error("another ctrain-sweep is running in " + dir_.string(), "wait for it, or stop it first");
  }
}

void SweepStore::create(const SweepConfig& cfg) {
  if (fs::exists(dir_ / "journal.jsonl") || fs::exists(dir_ / "sweep.jsonl")) {
    throw ConfigError("--output-dir " + dir_.string() + " already holds a sweep",
                      "continue it with --resume, or choose another --output-dir");
  }
  write_file_atomic((dir_ / "config.json").string(), json_dump(cfg.to_json(), 2) + "\n");
}

void SweepStore::open_journal() {
  journal_.open(dir_ / "journal.jsonl", std::ios::app);
  if (!journal_) throw Error("cannot open " + (dir_ / "journal.jsonl").string() + " for appending");
}

void SweepStore::journal(const nlohmann::json& event) {
  journal_ << json_dump(event) << std::endl;
  if (!journal_) throw Error("cannot append to " + (dir_ / "journal.jsonl").string() + ": " + std::strerror(errno));
}

void SweepStore::append_record(const nlohmann::json& record) {
  std::ofstream s(dir_ / "sweep.jsonl", std::ios::app);
  s << json_dump(record) << std::endl;
  if (!s) throw Error("cannot append to " + (dir_ / "sweep.jsonl").string() + ": " + std::strerror(errno));
}

void SweepStore::write_best(const nlohmann::json& record) {
  write_file_atomic((dir_ / "best.json").string(), json_dump(record, 2) + "\n");
}

std::vector<nlohmann::json> SweepStore::journal_events() const {
  if (!fs::exists(dir_ / "journal.jsonl")) {
    throw Error("--resume: " + dir_.string() + " holds no sweep (no journal.jsonl)", "start it without --resume");
  }
  return tracking::read_jsonl((dir_ / "journal.jsonl").string(), /*allow_torn_last_line=*/true);
}

std::vector<nlohmann::json> SweepStore::records() const {
  const fs::path finished = dir_ / "sweep.jsonl";  // absent until a trial finishes
  if (!fs::exists(finished)) return {};
  return tracking::read_jsonl(finished.string(), /*allow_torn_last_line=*/true);
}

fs::path SweepStore::trial_dir(int64_t id) const { return dir_ / "trials" / trial_name(id); }

}  // namespace ctrain::tune
