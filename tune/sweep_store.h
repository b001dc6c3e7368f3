#pragma once
// A sweep's state on disk (the layout in sweep.h): the directory's lock, config.json, the
// journal of trial starts and rung results, sweep.jsonl's finished trials and best.json. The
// scheduler decides; this only reads and writes, atomically where a reader may look.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::tune {

struct SweepConfig;

class SweepStore {
 public:
  explicit SweepStore(std::filesystem::path dir);
  ~SweepStore();

  // Creates DIR/trials and takes DIR/.lock for this process's life. Throws ctrain::Error when
  // another ctrain-sweep holds it.
  void lock();
  // A new sweep: refuses a directory that holds one, writes config.json.
  void create(const SweepConfig& cfg);
  // Appends to journal.jsonl from now on (flushed per line).
  void open_journal();
  void journal(const nlohmann::json& event);
  // A finished trial's line in sweep.jsonl (flushed), and best.json rewritten atomically.
  void append_record(const nlohmann::json& record);
  void write_best(const nlohmann::json& record);

  // For --resume: every journal event (a torn last line, from a sweep killed mid-append, did
  // not happen) and every finished trial. Throws ctrain::Error when there is no journal.
  std::vector<nlohmann::json> journal_events() const;
  std::vector<nlohmann::json> records() const;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path trial_dir(int64_t id) const;

 private:
  std::filesystem::path dir_;
  int lock_fd_ = -1;
  std::ofstream journal_;
};

}  // namespace ctrain::tune
