#pragma once
// TensorBoard event files from C++: TFRecord framing (length, masked CRC-32C of the length,
// data, masked CRC-32C of the data) around Event protocol buffers built from tensorboard.proto
// (the fields TensorFlow's event.proto and summary.proto give them). A file_version event
// first, then scalar summaries with step and wall time. tracking/ knows no trainer.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ctrain::tracking {

// CRC-32C (Castagnoli, reflected 0x82F63B78), as TFRecord uses it.
uint32_t crc32c(const void* data, size_t n);
// TensorFlow's masked form of it: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// True when this build writes event files (protobuf and protoc were found).
bool event_files_available();

class EventWriter {
 public:
  // Creates `dir`/events.out.tfevents.<unix seconds>.<host>.<pid> with its file_version event.
  // Throws ctrain::Error naming the file if it cannot be created.
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  const std::string& path() const;
  // Queues one scalar summary (wall time: now); written by flush().
  void scalar(const std::string& tag, int64_t step, double value);
  // Appends the queued events to the file and flushes it, so TensorBoard shows them while the
  // run goes on. An append error is reported once on stderr and later events are dropped:
  // the run goes on (metrics.jsonl remains the record). Returns false after an error.
  bool flush();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctrain::tracking
