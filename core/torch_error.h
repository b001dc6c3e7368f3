#pragma once
// A LibTorch exception's message without its C++ backtrace: c10::Error::what() appends a
// stack trace (15 frames for an NCCL failure) that a user must never have to read. Kept apart
// from core/error.h, which stays free of LibTorch headers (the fuzz targets include it alone).
#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace ctrain {

inline std::string message_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

}  // namespace ctrain
