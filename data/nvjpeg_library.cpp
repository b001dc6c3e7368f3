#include "data/nvjpeg_library.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace ctrain::data::nvjpeg {
namespace {


std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

std::mutex path_mu;
std::string first_path;  // set_library_path(): the programs pass $CTRAIN_NVJPEG_LIBRARY

// Where libnvjpeg may be, in order: set_library_path()'s; the loader's path; beside the CUDA
// runtime this process uses; the toolkit's usual folders (not on the loader's path by default);
// PyPI's nvidia-nvjpeg in the site-packages a loaded library (the PyTorch wheel's) comes from.
std::vector<std::string> library_candidates() {
  std::vector<std::string> c;
  {
    std::lock_guard<std::mutex> lock(path_mu);
    if (!first_path.empty()) c.push_back(first_path);
  }
  c.push_back("libnvjpeg.so.13");
  c.push_back("libnvjpeg.so");
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&cudaGetDevice), &info) != 0 && info.dli_fname != nullptr) {
    const std::string f = info.dli_fname;
    if (const size_t slash = f.rfind('/'); slash != std::string::npos) c.push_back(f.substr(0, slash) + "/libnvjpeg.so.13");
  }
  for (const char* d : {"/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
                        "/usr/local/cuda-13.0/targets/x86_64-linux/lib"}) {
    c.push_back(std::string(d) + "/libnvjpeg.so.13");
  }
  dl_iterate_phdr(
      [](struct dl_phdr_info* i, size_t, void* out) {
        const std::string f = i->dlpi_name ? i->dlpi_name : "";
        const size_t at = f.find("/site-packages/");
        if (at != std::string::npos) {
          auto* list = static_cast<std::vector<std::string>*>(out);
          const std::string lib = f.substr(0, at) + "/site-packages/nvidia/cu13/lib/libnvjpeg.so.13";
          if (std::find(list->begin(), list->end(), lib) == list->end()) list->push_back(lib);
        }
        return 0;
      },
      &c);
  return c;
}

Library load_library() {
  Library lib;
  std::string tried;
  for (const std::string& name : library_candidates()) {
    lib.handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib.handle) break;
    // Paths that do not exist are left out of the message: it would list every guess.
    if (name.find('/') == std::string::npos || access(name.c_str(), F_OK) == 0) {
      tried += std::string(tried.empty() ? "" : "; ") + "dlopen(\"" + name + "\"): " + dl_error();
    }
  }
  if (!lib.handle) {
    lib.reason = "libnvjpeg cannot be loaded (" + tried + ")";
    return lib;
  }
  // dlsym returns void*; a function pointer from it is what POSIX guarantees to work.
  auto lookup = [&lib](const char* name, bool needed, auto* out) {
    if (!lib.reason.empty()) return;
    dlerror();  // clears a stale error
    void* p = dlsym(lib.handle, name);
    if (!p && needed) {
      lib.reason = std::string("libnvjpeg lacks ") + name + " (too old?): " + dl_error();
      return;
    }
    *out = reinterpret_cast<std::remove_pointer_t<decltype(out)>>(p);
  };
#define CTRAIN_NVJPEG_NEEDED(name) lookup(#name, true, &lib.api.name);
#define CTRAIN_NVJPEG_OPTIONAL(name) lookup(#name, false, &lib.api.name);
  CTRAIN_NVJPEG_FUNCTIONS(CTRAIN_NVJPEG_NEEDED, CTRAIN_NVJPEG_OPTIONAL)
#undef CTRAIN_NVJPEG_NEEDED
#undef CTRAIN_NVJPEG_OPTIONAL
  if (!lib.reason.empty()) {
    dlclose(lib.handle);
    lib.handle = nullptr;
  }
  return lib;
}

const char* status_name(nvjpegStatus_t s) {
  switch (s) {
    case NVJPEG_STATUS_SUCCESS:
      return "NVJPEG_STATUS_SUCCESS";
    case NVJPEG_STATUS_NOT_INITIALIZED:
      return "NVJPEG_STATUS_NOT_INITIALIZED";
    case NVJPEG_STATUS_INVALID_PARAMETER:
      return "NVJPEG_STATUS_INVALID_PARAMETER";
    case NVJPEG_STATUS_BAD_JPEG:
      return "NVJPEG_STATUS_BAD_JPEG";
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED:
      return "NVJPEG_STATUS_JPEG_NOT_SUPPORTED";
    case NVJPEG_STATUS_ALLOCATOR_FAILURE:
      return "NVJPEG_STATUS_ALLOCATOR_FAILURE";
    case NVJPEG_STATUS_EXECUTION_FAILED:
      return "NVJPEG_STATUS_EXECUTION_FAILED";
    case NVJPEG_STATUS_ARCH_MISMATCH:
      return "NVJPEG_STATUS_ARCH_MISMATCH";
    case NVJPEG_STATUS_INTERNAL_ERROR:
      return "NVJPEG_STATUS_INTERNAL_ERROR";
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED:
      return "NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED";
    case NVJPEG_STATUS_INCOMPLETE_BITSTREAM:
      return "NVJPEG_STATUS_INCOMPLETE_BITSTREAM";
  }
  return nullptr;  // a status newer than this header
}

}  // namespace

void set_library_path(const std::string& path) {
  std::lock_guard<std::mutex> lock(path_mu);
  first_path = path;
}

// A function-local static: loaded once, on first use, thread-safe (C++11 static init).
const Library& library() {
  static const Library lib = load_library();
  return lib;
}

std::string status_text(nvjpegStatus_t s) {
  const char* name = status_name(s);
  return name ? name : "nvjpegStatus_t " + std::to_string(static_cast<int>(s));
}

void check(nvjpegStatus_t s, const char* call) {
  if (s != NVJPEG_STATUS_SUCCESS)
    throw Error(std::string("nvJPEG: ") + call + " failed: " + status_text(s));
}

}  // namespace ctrain::data::nvjpeg
