#pragma once
// Private to data/: what an NvjpegDecoder holds (the nvJPEG handle, its states, buffers,
// streams, parameters and events) and their creation and release (nvjpeg_state.cpp); the
// decoding itself is nvjpeg_decoder.cpp.
#include <cuda_runtime_api.h>
#include <nvjpeg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/nvjpeg_decoder.h"
#include "data/nvjpeg_library.h"

namespace ctrain::data {

inline void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess)
    throw Error(std::string("nvJPEG decoder: ") + call + " failed: " + cudaGetErrorName(e) + " (" +
                cudaGetErrorString(e) + ")");
}

// Huffman decoding on the GPU (GPU_HYBRID) pays off only for large images; below this many
// pixels (of the rows down to the region's bottom, which is what must be entropy-decoded)
// the CPU (HYBRID) is faster. DALI's and nvImageCodec's default threshold.
inline constexpr int64_t kGpuHuffmanMinPixels = 1000 * 1000;

inline constexpr nvjpegOutputFormat_t kFormat = NVJPEG_OUTPUT_RGBI;  // interleaved RGB in channel[0]

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

  const nvjpeg::Api& nv;
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

  explicit Impl(const nvjpeg::Api& api) : nv(api) {}
  ~Impl() { release(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void init(int max_batch);
  void release();
  void add_slot();
  JpegResult decode_one(const JpegRegion& r, size_t index, cudaStream_t stream);
};

}  // namespace ctrain::data
