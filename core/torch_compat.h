#pragma once
// The one place that knows how the two LibTorch builds differ: Debian's 1.13 (lane 1) and the
// PyTorch 2.11 wheel (lane 2, and the GPU node). Code elsewhere names no TORCH_VERSION.
//  - c10d: 2.x puts ProcessGroupGloo/NCCL behind c10d::Backend; 1.13 derives them from
//    c10d::ProcessGroup.
//  - NCCL: 2.x reads TORCH_NCCL_BLOCKING_WAIT (1.13: NCCL_BLOCKING_WAIT); 2.5+ has
//    ProcessGroupNCCL::shutdown() (a call that must not be compiled before: #if
//    CTRAIN_TORCH_AT_LEAST(2, 5)).
//  - autocast: 2.4+ has device-typed calls (set_autocast_enabled(kCPU, ...)); 1.13 per-device
//    ones (set_cpu_enabled, set_autocast_gpu_dtype).
#include <ATen/autocast_mode.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

// True when the LibTorch compiled against is MAJOR.MINOR or newer; usable in #if.
#define CTRAIN_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace ctrain::compat {

#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

// The variable that makes NCCL's Work::wait() throw on a failed or timed-out collective.
inline const char* nccl_blocking_wait_env() {
#if TORCH_VERSION_MAJOR >= 2
  return "TORCH_NCCL_BLOCKING_WAIT";
#else
  return "NCCL_BLOCKING_WAIT";
#endif
}

// Autocast's state for one device type: on/off and the dtype it casts to.
#if CTRAIN_TORCH_AT_LEAST(2, 4)
inline bool autocast_enabled(c10::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
inline at::ScalarType autocast_dtype(c10::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
inline void set_autocast(c10::DeviceType t, bool on, at::ScalarType dtype) {
  at::autocast::set_autocast_enabled(t, on);
  at::autocast::set_autocast_dtype(t, dtype);
}
#else
inline bool autocast_enabled(c10::DeviceType t) {
  return t == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
inline at::ScalarType autocast_dtype(c10::DeviceType t) {
  return t == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
}
inline void set_autocast(c10::DeviceType t, bool on, at::ScalarType dtype) {
  if (t == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(on);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_enabled(on);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
}
#endif

}  // namespace ctrain::compat
