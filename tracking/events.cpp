#include "tracking/events.h"

#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "tracking/tensorboard.pb.h"

namespace ctrain::tracking {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string record(const std::string& data) {
  // TFRecord: uint64 length (little-endian), uint32 masked CRC of those 8 bytes, the data,
  // uint32 masked CRC of the data.
  std::string out;
  const uint64_t len = data.size();
  unsigned char hdr[8];
  for (int i = 0; i < 8; ++i) hdr[i] = static_cast<unsigned char>(len >> (8 * i));
  auto put32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  };
  out.append(reinterpret_cast<const char*>(hdr), 8);
  put32(masked_crc32c(hdr, 8));
  out += data;
  put32(masked_crc32c(data.data(), data.size()));
  return out;
}

}  // namespace

bool event_files_available() { return true; }

struct EventWriter::Impl {
  std::string path;
  std::string pending;
  bool failed = false;
};

EventWriter::EventWriter(const std::string& dir) : impl_(std::make_unique<Impl>()) {
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  impl_->path = (std::filesystem::path(dir) /
                 ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now_seconds())) + "." +
                  host + "." + std::to_string(::getpid())))
                    .string();
  FILE* f = std::fopen(impl_->path.c_str(), "wb");
  if (f == nullptr) {
    throw Error("cannot create " + impl_->path + ": " + std::strerror(errno), "check --output-dir");
  }
  std::fclose(f);
  tensorboard::Event e;
  e.set_wall_time(now_seconds());
  e.set_file_version("brain.Event:2");
  impl_->pending += record(e.SerializeAsString());
  flush();
}

EventWriter::~EventWriter() { flush(); }

const std::string& EventWriter::path() const { return impl_->path; }

void EventWriter::scalar(const std::string& tag, int64_t step, double value) {
  if (impl_->failed) return;
  tensorboard::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  impl_->pending += record(e.SerializeAsString());
}

bool EventWriter::flush() {
  if (impl_->failed) return false;
  if (impl_->pending.empty()) return true;
  FILE* f = std::fopen(impl_->path.c_str(), "ab");
  bool ok = f != nullptr && std::fwrite(impl_->pending.data(), 1, impl_->pending.size(), f) == impl_->pending.size();
  const int err = errno;
  if (f != nullptr) ok = (std::fclose(f) == 0) && ok;
  impl_->pending.clear();
  if (!ok) {
    impl_->failed = true;
    std::cerr << "warning: cannot append to " << impl_->path << ": " << std::strerror(err)
              << "; TensorBoard events stop here, metrics.jsonl goes on\n";
  }
  return ok;
}

}  // namespace ctrain::tracking
