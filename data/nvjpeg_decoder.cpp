// nvJPEG through dlopen: nvjpeg.h is included for its types and declarations only, and every
// function is called through a pointer looked up in the loaded library, so nothing here links
// against libnvjpeg (see the header for why). The CUDA runtime is linked (events, devices).
//
// Per decode() call, in order (the design of torchvision's decode_jpegs_cuda, nvImageCodec's
// nvjpeg_hw_decoder / nvjpeg_cuda_decoder and DALI's nvJPEGDecoder):
//  1. every image: nvjpegJpegStreamParseHeader, frame size and region check, format checks;
//     with the hardware engine, ROI into its batch slot's params and
//     nvjpegDecodeBatchedSupportedEx (0 = the engine takes it, ROI included);
//  2. the engine's images: nvjpegDecodeBatchedInitialize (batch size = their count) and one
//     nvjpegDecodeBatchedEx, each with its own params (ROI);
//  3. the rest, and all of 2's images if its call failed: one by one, decoupled API:
//     nvjpegJpegStreamParse, nvjpegDecodeJpegHost (CPU), nvjpegDecodeJpegTransferToDevice and
//     nvjpegDecodeJpegDevice (on `stream`).
#include "data/nvjpeg_decoder.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <link.h>
#include <nvjpeg.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ctrain::data {
namespace {

// The functions used, each with its exact type from nvjpeg.h. X = needed; O = optional (used
// when present: a libnvjpeg.so of an older CUDA may lack them).
#define CTRAIN_NVJPEG_FUNCTIONS(X, O)     \
  X(nvjpegCreateEx)                       \
  X(nvjpegDestroy)                        \
  O(nvjpegGetHardwareDecoderInfo)         \
  X(nvjpegJpegStateCreate)                \
  X(nvjpegJpegStateDestroy)               \
  X(nvjpegDecodeBatchedInitialize)        \
  O(nvjpegDecodeBatchedPreAllocate)       \
  X(nvjpegDecodeBatchedSupportedEx)       \
  X(nvjpegDecodeBatchedEx)                \
  X(nvjpegBufferPinnedCreate)             \
  X(nvjpegBufferPinnedDestroy)            \
  X(nvjpegBufferDeviceCreate)             \
  X(nvjpegBufferDeviceDestroy)            \
  X(nvjpegStateAttachPinnedBuffer)        \
  X(nvjpegStateAttachDeviceBuffer)        \
  X(nvjpegJpegStreamCreate)               \
  X(nvjpegJpegStreamDestroy)              \
  X(nvjpegJpegStreamParse)                \
  X(nvjpegJpegStreamParseHeader)          \
  X(nvjpegJpegStreamGetJpegEncoding)      \
  X(nvjpegJpegStreamGetFrameDimensions)   \
  X(nvjpegJpegStreamGetComponentsNum)     \
  X(nvjpegJpegStreamGetChromaSubsampling) \
  O(nvjpegJpegStreamGetSamplePrecision)   \
  X(nvjpegDecodeParamsCreate)             \
  X(nvjpegDecodeParamsDestroy)            \
  X(nvjpegDecodeParamsSetOutputFormat)    \
  X(nvjpegDecodeParamsSetROI)             \
  X(nvjpegDecodeParamsSetAllowCMYK)       \
  X(nvjpegDecoderCreate)                  \
  X(nvjpegDecoderDestroy)                 \
  X(nvjpegDecoderJpegSupported)           \
  X(nvjpegDecoderStateCreate)             \
  X(nvjpegDecodeJpegHost)                 \
  X(nvjpegDecodeJpegTransferToDevice)     \
  X(nvjpegDecodeJpegDevice)

// decltype of a declared function's address needs its declaration only, not its definition.
// Qualified (::) so the member of the same name does not change what the name means.
struct Api {
#define CTRAIN_NVJPEG_MEMBER(name) decltype(&::name) name = nullptr;
  CTRAIN_NVJPEG_FUNCTIONS(CTRAIN_NVJPEG_MEMBER, CTRAIN_NVJPEG_MEMBER)
#undef CTRAIN_NVJPEG_MEMBER
};

struct Library {
  void* handle = nullptr;  // never dlclose'd: decoders may outlive any owner of it
  std::string reason;      // "" when loaded with every needed function
  Api api;
};

std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

// Where libnvjpeg may be, in order: $CTRAIN_NVJPEG_LIBRARY; the loader's path; beside the CUDA
// runtime this process uses; the toolkit's usual folders (not on the loader's path by default);
// PyPI's nvidia-nvjpeg in the site-packages a loaded library (the PyTorch wheel's) comes from.
std::vector<std::string> library_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("CTRAIN_NVJPEG_LIBRARY"); env != nullptr && *env != '\0') c.push_back(env);
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

// A function-local static: loaded once, on first use, thread-safe (C++11 static init).
const Library& library() {
  static const Library lib = load_library();
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

std::string status_text(nvjpegStatus_t s) {
  const char* name = status_name(s);
  return name ? name : "nvjpegStatus_t " + std::to_string(static_cast<int>(s));
}

// Setup and bookkeeping calls: any failure is the library's or the machine's, not an image's.
void check(nvjpegStatus_t s, const char* call) {
  if (s != NVJPEG_STATUS_SUCCESS)
    throw Error(std::string("nvJPEG: ") + call + " failed: " + status_text(s));
}

void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess)
    throw Error(std::string("nvJPEG decoder: ") + call + " failed: " + cudaGetErrorName(e) + " (" +
                cudaGetErrorString(e) + ")");
}

// What a failed call on one image means. Parsing only reads the bytes on the host, so its
// INVALID_PARAMETER (the handle, pointer and length are valid) is about the data too. For the
// decode calls, a status the image itself can cause (a region or sampling one decoder refuses,
// a bitstream the GPU Huffman decoder chokes on) is this image's result, so that one odd file
// is skipped or named instead of ending the run; only a fault of the machine (an allocation
// failure, a sticky CUDA error on `stream`) throws.
JpegResult classify(nvjpegStatus_t s, const char* call, bool parse, size_t index,
                    cudaStream_t stream = nullptr) {
  JpegResult r;
  r.reason = status_text(s) + " from " + call;
  switch (s) {
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED:
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED:
      r.outcome = JpegOutcome::kUnsupported;
      return r;
    case NVJPEG_STATUS_BAD_JPEG:
    case NVJPEG_STATUS_INCOMPLETE_BITSTREAM:
      r.outcome = JpegOutcome::kCorrupt;
      return r;
    case NVJPEG_STATUS_INVALID_PARAMETER:
      r.outcome = parse ? JpegOutcome::kCorrupt : JpegOutcome::kUnsupported;
      return r;
    case NVJPEG_STATUS_EXECUTION_FAILED:
    case NVJPEG_STATUS_INTERNAL_ERROR:
      if (!parse) {
        const cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess || e == cudaErrorNotReady) {
          r.outcome = JpegOutcome::kCorrupt;
          return r;
        }
        r.reason += std::string("; CUDA: ") + cudaGetErrorName(e);
      }
      break;
    default:
      break;
  }
  throw Error("nvJPEG: " + r.reason + " (image " + std::to_string(index) + " of the batch)");
}

JpegResult failed(JpegOutcome outcome, std::string reason) {
  JpegResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

// Makes the decoder's device current for a call and restores the caller's after it: the
// nvJPEG handle, its buffers and the events belong to the device they were created on.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device_) check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);  // best effort: no throw here
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

// Huffman decoding on the GPU (GPU_HYBRID) pays off only for large images; below this many
// pixels (of the rows down to the region's bottom, which is what must be entropy-decoded)
// the CPU (HYBRID) is faster. DALI's and nvImageCodec's default threshold.
constexpr int64_t kGpuHuffmanMinPixels = 1000 * 1000;

constexpr nvjpegOutputFormat_t kFormat = NVJPEG_OUTPUT_RGBI;  // interleaved RGB in channel[0]

}  // namespace

struct NvjpegDecoder::Impl {
  enum Backend { kHybrid = 0, kGpuHybrid = 1 };
  // Double-buffered, as in torchvision and nvImageCodec: the host stage of an image fills one
  // page's pinned buffer while the previous image's copy from the other may still be running.
  struct Page {
    nvjpegJpegState_t state[2] = {nullptr, nullptr};  // by Backend
    nvjpegBufferPinned_t pinned = nullptr;
    nvjpegJpegStream_t stream = nullptr;  // the image's full parse
    cudaEvent_t copied = nullptr;  // the last device work that read this page's pinned buffer
  };

  const Api& nv;
  int device = 0;
  nvjpegHandle_t handle = nullptr;
  bool hardware = false;

  // Batched hardware path.
  nvjpegJpegState_t hw_state = nullptr;
  std::vector<nvjpegDecodeParams_t> slot_params;  // one per batch slot (ROI of that image)
  cudaEvent_t hw_done = nullptr;                  // the last batched decode's device work

  // Header parse of every image (size, format, hardware support).
  nvjpegJpegStream_t header = nullptr;

  // One by one (decoupled API) path. Decoders hold no per-image data and are shared by pages.
  nvjpegJpegDecoder_t decoder[2] = {nullptr, nullptr};  // by Backend
  Page pages[2];
  int page = 0;
  nvjpegBufferDevice_t device_buffer = nullptr;
  nvjpegDecodeParams_t single_params = nullptr;
  cudaEvent_t single_done = nullptr;  // the last single decode's device work

  // Reused across calls.
  std::vector<size_t> hw_images, single_images;
  std::vector<const unsigned char*> hw_data;
  std::vector<size_t> hw_sizes;
  std::vector<nvjpegImage_t> hw_out;

  explicit Impl(const Api& api) : nv(api) {}
  ~Impl() { release(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void init(int max_batch);
  void release();
  void add_slot();
  JpegResult decode_one(const JpegRegion& r, size_t index, cudaStream_t stream);
};

void NvjpegDecoder::Impl::add_slot() {
  nvjpegDecodeParams_t p = nullptr;
  check(nv.nvjpegDecodeParamsCreate(handle, &p), "nvjpegDecodeParamsCreate");
  slot_params.push_back(p);  // owned before the setters can throw
  check(nv.nvjpegDecodeParamsSetOutputFormat(p, kFormat), "nvjpegDecodeParamsSetOutputFormat");
  check(nv.nvjpegDecodeParamsSetAllowCMYK(p, 1), "nvjpegDecodeParamsSetAllowCMYK");
}

void NvjpegDecoder::Impl::init(int max_batch) {
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");

  // The hardware backend where the GPU has the engine; where it has not, nvjpegCreateEx fails
  // (NVJPEG_STATUS_ARCH_MISMATCH, as torchvision expects) and the default backend serves the
  // decoupled decoders alone. The decoupled decoders work on a hardware handle too (torchvision
  // and DALI create theirs on it).
  nvjpegStatus_t hw =
      nv.nvjpegCreateEx(NVJPEG_BACKEND_HARDWARE, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT, &handle);
  hardware = hw == NVJPEG_STATUS_SUCCESS;
  if (hardware && nv.nvjpegGetHardwareDecoderInfo) {
    // Some setups create the handle and still have no engine to give it (nvImageCodec then
    // sends nothing to the hardware decoder).
    unsigned int engines = 0, cores = 0;
    if (nv.nvjpegGetHardwareDecoderInfo(handle, &engines, &cores) != NVJPEG_STATUS_SUCCESS ||
        engines == 0) {
      nv.nvjpegDestroy(handle);
      handle = nullptr;
      hardware = false;
    }
  }
  if (!hardware) {
    handle = nullptr;
    nvjpegStatus_t def =
        nv.nvjpegCreateEx(NVJPEG_BACKEND_DEFAULT, nullptr, nullptr, NVJPEG_FLAGS_DEFAULT, &handle);
    if (def != NVJPEG_STATUS_SUCCESS) {
      handle = nullptr;
      throw Error("nvJPEG: cannot create a handle on CUDA device " + std::to_string(device) +
                      ": the hardware backend gave " + status_text(hw) + ", the default backend " +
                      status_text(def),
                  "check that this process sees a working GPU (nvidia-smi), or decode on the "
                  "CPU");
    }
  }

  check(nv.nvjpegJpegStreamCreate(handle, &header), "nvjpegJpegStreamCreate");
  check_cuda(cudaEventCreateWithFlags(&hw_done, cudaEventDisableTiming), "cudaEventCreate");
  check_cuda(cudaEventCreateWithFlags(&single_done, cudaEventDisableTiming), "cudaEventCreate");

  if (hardware) {
    check(nv.nvjpegJpegStateCreate(handle, &hw_state), "nvjpegJpegStateCreate");
    slot_params.reserve(static_cast<size_t>(max_batch));
    for (int i = 0; i < max_batch; ++i) add_slot();
    // A memory pool for the hardware decoder, sized for the batch (the image size hints are
    // the minimum): DALI and nvImageCodec measured over 20% faster multi-GPU training with it.
    // An optimisation only: its failure is not an error.
    if (nv.nvjpegDecodeBatchedPreAllocate)
      nv.nvjpegDecodeBatchedPreAllocate(handle, hw_state, max_batch, 1, 1, NVJPEG_CSS_444, kFormat);
  }

  for (Backend b : {kHybrid, kGpuHybrid}) {
    nvjpegBackend_t backend = b == kHybrid ? NVJPEG_BACKEND_HYBRID : NVJPEG_BACKEND_GPU_HYBRID;
    check(nv.nvjpegDecoderCreate(handle, backend, &decoder[b]), "nvjpegDecoderCreate");
    for (Page& p : pages)
      check(nv.nvjpegDecoderStateCreate(handle, decoder[b], &p.state[b]),
            "nvjpegDecoderStateCreate");
  }
  for (Page& p : pages) {
    check_cuda(cudaEventCreateWithFlags(&p.copied, cudaEventDisableTiming), "cudaEventCreate");
    check(nv.nvjpegBufferPinnedCreate(handle, nullptr, &p.pinned), "nvjpegBufferPinnedCreate");
    check(nv.nvjpegJpegStreamCreate(handle, &p.stream), "nvjpegJpegStreamCreate");
  }
  check(nv.nvjpegBufferDeviceCreate(handle, nullptr, &device_buffer), "nvjpegBufferDeviceCreate");
  check(nv.nvjpegDecodeParamsCreate(handle, &single_params), "nvjpegDecodeParamsCreate");
  check(nv.nvjpegDecodeParamsSetOutputFormat(single_params, kFormat),
        "nvjpegDecodeParamsSetOutputFormat");
  check(nv.nvjpegDecodeParamsSetAllowCMYK(single_params, 1), "nvjpegDecodeParamsSetAllowCMYK");
}

// Also undoes a partial init(). Statuses are ignored: nothing may throw from a destructor, and
// at exit the CUDA context may already be gone.
void NvjpegDecoder::Impl::release() {
  if (!handle) return;
  {
    int previous = -1;
    bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != device &&
                    cudaSetDevice(device) == cudaSuccess;
    // Device work still reading the pinned buffers or writing through the states must end
    // before they are freed.
    if (hw_done) cudaEventSynchronize(hw_done);
    if (single_done) cudaEventSynchronize(single_done);
    for (nvjpegDecodeParams_t p : slot_params) nv.nvjpegDecodeParamsDestroy(p);
    slot_params.clear();
    if (single_params) nv.nvjpegDecodeParamsDestroy(single_params);
    for (Page& p : pages) {
      if (p.copied) {
        cudaEventSynchronize(p.copied);
        cudaEventDestroy(p.copied);
      }
      for (nvjpegJpegState_t& s : p.state)
        if (s) nv.nvjpegJpegStateDestroy(s);
      if (p.pinned) nv.nvjpegBufferPinnedDestroy(p.pinned);
      if (p.stream) nv.nvjpegJpegStreamDestroy(p.stream);
      p = Page();
    }
    if (device_buffer) nv.nvjpegBufferDeviceDestroy(device_buffer);
    for (nvjpegJpegDecoder_t& d : decoder)
      if (d) nv.nvjpegDecoderDestroy(d);
    if (hw_state) nv.nvjpegJpegStateDestroy(hw_state);
    if (header) nv.nvjpegJpegStreamDestroy(header);
    if (hw_done) cudaEventDestroy(hw_done);
    if (single_done) cudaEventDestroy(single_done);
    nv.nvjpegDestroy(handle);
    if (switched) cudaSetDevice(previous);
  }
  single_params = nullptr;
  device_buffer = nullptr;
  decoder[0] = decoder[1] = nullptr;
  hw_state = nullptr;
  header = nullptr;
  hw_done = single_done = nullptr;
  handle = nullptr;
}

// One image through the decoupled API: the host stage (parse, Huffman decoding on the CPU for
// HYBRID) into this page's pinned buffer, then the copy and the device stage on `stream`.
// Before the copy, the previous image's device work must have ended: the device buffer is
// shared, and the next image's host stage refills the pinned buffer that work copied from.
JpegResult NvjpegDecoder::Impl::decode_one(const JpegRegion& r, size_t index, cudaStream_t stream) {
  page ^= 1;
  Page& pg = pages[page];
  // The last image on this page may still be copying from its pinned buffer: the image after it
  // may have failed before its own wait below (a bad file), so that wait does not cover it.
  check_cuda(cudaEventSynchronize(pg.copied), "cudaEventSynchronize");
  nvjpegStatus_t s = nv.nvjpegJpegStreamParse(handle, r.data, r.size, 0, 0, pg.stream);
  if (s != NVJPEG_STATUS_SUCCESS) return classify(s, "nvjpegJpegStreamParse", true, index);

  check(nv.nvjpegDecodeParamsSetROI(single_params, r.left, r.top, r.width, r.height),
        "nvjpegDecodeParamsSetROI");

  // GPU_HYBRID does not take progressive JPEGs (nvImageCodec asks it about baseline ones only).
  nvjpegJpegEncoding_t encoding = NVJPEG_ENCODING_UNKNOWN;
  Backend b = kHybrid;
  if (nv.nvjpegJpegStreamGetJpegEncoding(pg.stream, &encoding) == NVJPEG_STATUS_SUCCESS &&
      encoding == NVJPEG_ENCODING_BASELINE_DCT &&
      int64_t{r.width} * (int64_t{r.top} + r.height) > kGpuHuffmanMinPixels) {
    int unsupported = -1;  // 0 = supported
    if (nv.nvjpegDecoderJpegSupported(decoder[kGpuHybrid], pg.stream, single_params,
                                      &unsupported) == NVJPEG_STATUS_SUCCESS &&
        unsupported == 0)
      b = kGpuHybrid;
  }
  const char* which = b == kHybrid ? " (HYBRID)" : " (GPU_HYBRID)";
  nvjpegJpegState_t state = pg.state[b];

  check(nv.nvjpegStateAttachPinnedBuffer(state, pg.pinned), "nvjpegStateAttachPinnedBuffer");
  s = nv.nvjpegDecodeJpegHost(handle, decoder[b], state, single_params, pg.stream);
  if (s != NVJPEG_STATUS_SUCCESS)
    return classify(s, (std::string("nvjpegDecodeJpegHost") + which).c_str(), false, index, stream);

  check_cuda(cudaEventSynchronize(single_done), "cudaEventSynchronize");
  check(nv.nvjpegStateAttachDeviceBuffer(state, device_buffer), "nvjpegStateAttachDeviceBuffer");
  s = nv.nvjpegDecodeJpegTransferToDevice(handle, decoder[b], state, pg.stream, stream);
  if (s == NVJPEG_STATUS_SUCCESS) {
    nvjpegImage_t out{};
    out.channel[0] = r.dst;
    out.pitch[0] = r.pitch;
    s = nv.nvjpegDecodeJpegDevice(handle, decoder[b], state, &out, stream);
    // Recorded whatever s is: a failed call may have enqueued work before failing.
    check_cuda(cudaEventRecord(pg.copied, stream), "cudaEventRecord");
    check_cuda(cudaEventRecord(single_done, stream), "cudaEventRecord");
    if (s != NVJPEG_STATUS_SUCCESS)
      return classify(s, (std::string("nvjpegDecodeJpegDevice") + which).c_str(), false, index, stream);
  } else {
    check_cuda(cudaEventRecord(pg.copied, stream), "cudaEventRecord");
    check_cuda(cudaEventRecord(single_done, stream), "cudaEventRecord");
    return classify(s, (std::string("nvjpegDecodeJpegTransferToDevice") + which).c_str(), false,
                    index, stream);
  }
  return JpegResult();
}

NvjpegDecoder::NvjpegDecoder(int max_batch) {
  std::string why = nvjpeg_unavailable_reason();
  if (!why.empty())
    throw Error("nvJPEG GPU decoding is unavailable: " + why,
                "install libnvjpeg (CUDA 13: the nvidia-nvjpeg wheel or the CUDA toolkit) where "
                "the dynamic loader finds it (LD_LIBRARY_PATH), or decode on the CPU");
  if (max_batch < 1)
    throw Error("NvjpegDecoder: max_batch must be at least 1, not " + std::to_string(max_batch));
  // impl_ is a member: if init() throws, its destructor releases what init() had created.
  impl_ = std::make_unique<Impl>(library().api);
  impl_->init(max_batch);
}

NvjpegDecoder::~NvjpegDecoder() = default;

bool NvjpegDecoder::has_hardware() const { return impl_->hardware; }

std::vector<JpegResult> NvjpegDecoder::decode(const std::vector<JpegRegion>& regions,
                                              cudaStream_t stream) {
  Impl& m = *impl_;
  const Api& nv = m.nv;
  DeviceGuard guard(m.device);
  std::vector<JpegResult> results(regions.size());
  m.hw_images.clear();
  m.single_images.clear();

  // 1. Header, region and format checks; which images the hardware engine takes.
  for (size_t i = 0; i < regions.size(); ++i) {
    const JpegRegion& r = regions[i];
    if (r.width > 0 && (!r.dst || r.pitch < size_t{3} * static_cast<size_t>(r.width)))
      throw Error("NvjpegDecoder::decode: image " + std::to_string(i) + " has " +
                  (r.dst ? "a pitch of " + std::to_string(r.pitch) + " bytes for " +
                               std::to_string(r.width) + " RGB pixels"
                         : std::string("no destination")));
    if (!r.data || r.size == 0) {
      results[i] = failed(JpegOutcome::kCorrupt, "no bytes (empty file)");
      continue;
    }
    nvjpegStatus_t s = nv.nvjpegJpegStreamParseHeader(m.handle, r.data, r.size, m.header);
    if (s != NVJPEG_STATUS_SUCCESS) {
      results[i] = classify(s, "nvjpegJpegStreamParseHeader", true, i);
      continue;
    }
    unsigned int w = 0, h = 0;
    s = nv.nvjpegJpegStreamGetFrameDimensions(m.header, &w, &h);
    if (s != NVJPEG_STATUS_SUCCESS) {
      results[i] = classify(s, "nvjpegJpegStreamGetFrameDimensions", true, i);
      continue;
    }
    if (r.top < 0 || r.left < 0 || r.height <= 0 || r.width <= 0 ||
        int64_t{r.top} + r.height > int64_t{h} || int64_t{r.left} + r.width > int64_t{w}) {
      results[i] = failed(JpegOutcome::kCorrupt,
                          "region of " + std::to_string(r.height) + "x" + std::to_string(r.width) +
                              " at (" + std::to_string(r.top) + ", " + std::to_string(r.left) +
                              ") (height x width at (top, left)) is " + "outside the " +
                              std::to_string(h) + "x" + std::to_string(w) + " image");
      continue;
    }
    // Formats nvJPEG's 8-bit decoders do not take, told apart before they are tried: lossless
    // JPEG needs another backend, 12-bit samples do not fit 8-bit output, and a colour image
    // with sampling factors of no known subsampling (or with 2 or more than 4 components) has
    // no RGB conversion. CMYK (4 components) is converted (SetAllowCMYK).
    // A query that fails leaves its check out: the decoder then says what is wrong.
    nvjpegJpegEncoding_t encoding = NVJPEG_ENCODING_UNKNOWN;
    nvjpegChromaSubsampling_t css = NVJPEG_CSS_UNKNOWN;
    unsigned int components = 0, precision = 0;
    const bool known_encoding =
        nv.nvjpegJpegStreamGetJpegEncoding(m.header, &encoding) == NVJPEG_STATUS_SUCCESS;
    const bool known_components =
        nv.nvjpegJpegStreamGetComponentsNum(m.header, &components) == NVJPEG_STATUS_SUCCESS;
    const bool known_css =
        nv.nvjpegJpegStreamGetChromaSubsampling(m.header, &css) == NVJPEG_STATUS_SUCCESS;
    const bool known_precision =
        nv.nvjpegJpegStreamGetSamplePrecision &&
        nv.nvjpegJpegStreamGetSamplePrecision(m.header, &precision) == NVJPEG_STATUS_SUCCESS;
    std::string refused;
    if (known_encoding && encoding == NVJPEG_ENCODING_LOSSLESS_HUFFMAN)
      refused = "lossless JPEG";
    else if (known_precision && precision != 8)
      refused = std::to_string(precision) + "-bit samples";
    else if (known_components && components != 1 && components != 3 && components != 4)
      refused = std::to_string(components) + " colour components";
    else if (known_components && known_css && components == 3 && css == NVJPEG_CSS_UNKNOWN)
      refused = "chroma subsampling of no known kind";
    if (!refused.empty()) {
      results[i] = failed(JpegOutcome::kUnsupported, refused + " (nvjpegJpegStreamParseHeader)");
      continue;
    }

    if (m.hardware) {
      const size_t slot = m.hw_images.size();
      if (slot == m.slot_params.size()) m.add_slot();  // a batch over max_batch
      nvjpegDecodeParams_t p = m.slot_params[slot];
      check(nv.nvjpegDecodeParamsSetROI(p, r.left, r.top, r.width, r.height),
            "nvjpegDecodeParamsSetROI");
      int unsupported = -1;  // 0 = supported
      if (nv.nvjpegDecodeBatchedSupportedEx(m.handle, m.header, p, &unsupported) ==
              NVJPEG_STATUS_SUCCESS &&
          unsupported == 0) {
        m.hw_images.push_back(i);
        continue;
      }
    }
    m.single_images.push_back(i);
  }

  // 2. One batched call for the hardware engine.
  std::string hw_failure;
  if (!m.hw_images.empty()) {
    const size_t n = m.hw_images.size();
    m.hw_data.resize(n);
    m.hw_sizes.resize(n);
    m.hw_out.assign(n, nvjpegImage_t{});
    for (size_t k = 0; k < n; ++k) {
      const JpegRegion& r = regions[m.hw_images[k]];
      m.hw_data[k] = r.data;
      m.hw_sizes[k] = r.size;
      m.hw_out[k].channel[0] = r.dst;
      m.hw_out[k].pitch[0] = r.pitch;
    }
    // The state's buffers may still be in use by the previous batch's device work.
    check_cuda(cudaEventSynchronize(m.hw_done), "cudaEventSynchronize");
    // Sets the state up for a batch of this size (and resets a failed one).
    check(nv.nvjpegDecodeBatchedInitialize(m.handle, m.hw_state, static_cast<int>(n), 1, kFormat),
          "nvjpegDecodeBatchedInitialize");
    nvjpegStatus_t s =
        nv.nvjpegDecodeBatchedEx(m.handle, m.hw_state, m.hw_data.data(), m.hw_sizes.data(),
                                 m.hw_out.data(), m.slot_params.data(), stream);
    check_cuda(cudaEventRecord(m.hw_done, stream), "cudaEventRecord");
    if (s == NVJPEG_STATUS_SUCCESS) {
      for (size_t i : m.hw_images) results[i].hardware = true;
    } else {
      // One bad file fails the whole call: retry each image alone, so that only it is
      // reported (and a real fault, a CUDA error, shows up again there and throws). Its writes
      // to dst are ordered before the retry's on the same stream.
      hw_failure = "; the hardware batch it was in failed with " + status_text(s);
      m.single_images.insert(m.single_images.end(), m.hw_images.begin(), m.hw_images.end());
      std::sort(m.single_images.begin(), m.single_images.end());
    }
  }

  // 3. The others one by one.
  for (size_t i : m.single_images) {
    results[i] = m.decode_one(regions[i], i, stream);
    const bool retried =
        !hw_failure.empty() && std::binary_search(m.hw_images.begin(), m.hw_images.end(), i);
    if (retried && results[i].outcome != JpegOutcome::kDecoded) results[i].reason += hw_failure;
  }
  return results;
}

std::string nvjpeg_unavailable_reason() { return library().reason; }

}  // namespace ctrain::data
