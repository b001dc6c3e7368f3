#pragma once
// Fuzz inputs for parsers that take a path: the bytes go to a per-process file in /dev/shm.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

inline const std::string& fuzz_write_file(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/ctrain-fuzz-" + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}
