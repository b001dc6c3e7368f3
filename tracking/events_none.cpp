// The event writer where protobuf or protoc is missing: trainers run as before and say once
// that no TensorBoard file is written (metrics.jsonl still is).
#include <iostream>

#include "tracking/events.h"

namespace ctrain::tracking {

struct EventWriter::Impl {
  std::string path;
};

bool event_files_available() { return false; }

EventWriter::EventWriter(const std::string&) : impl_(std::make_unique<Impl>()) {}
EventWriter::~EventWriter() = default;
const std::string& EventWriter::path() const { return impl_->path; }
void EventWriter::scalar(const std::string&, int64_t, double) {}
bool EventWriter::flush() { return true; }

}  // namespace ctrain::tracking
