#pragma once
// Batched JPEG region decoding on the GPU with nvJPEG, for the GPU image pipeline: a train-time
// RandomResizedCrop decodes only its crop's rectangle, straight into device memory. Baseline
// JPEGs the GPU's hardware JPEG engine (NVJPG: A100, H100, H200, ...) takes go to it in one
// batched call; the rest (progressive, CMYK, 4:1:1, ...) go one by one through nvJPEG's
// CUDA decoders, and what nvJPEG cannot read is reported so the caller can use a CPU decoder.
//
// libnvjpeg is loaded with dlopen, not linked: the same binary must run where it is absent (a
// CPU node, a CUDA install without it), and `--decode auto` picks the GPU decoder by whether
// it loads (nvjpeg_unavailable_reason()). NVIDIA's nvImageCodec loads it the same way.
#include <cuda_runtime_api.h>  // cudaStream_t only

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ctrain::data {

// Why libnvjpeg cannot be used here ("" when it loads): tries set_nvjpeg_library()'s file
// (data/gpu_image_folder.h), dlopen("libnvjpeg.so.13"), "libnvjpeg.so", then the places
// data/nvjpeg_library.cpp lists; the reason names what was tried and dlerror(), or the
// function the library lacks. Thread-safe, loads once (and never unloads: decoders may live
// until exit).
std::string nvjpeg_unavailable_reason();

// One image to decode: its encoded bytes and the rectangle of the stored image (EXIF
// orientation ignored) to decode, written as interleaved 8-bit RGB to dst (device memory,
// rows `pitch` bytes apart, height rows of width*3 bytes). Grayscale images come out with
// three equal channels; CMYK ones are converted to RGB by nvJPEG.
// The bytes are read during decode(): from pageable memory (a std::string, a std::vector)
// nvJPEG copies them before it returns. From page-locked memory (cudaHostAlloc) its copies may
// still be in flight on the stream afterwards: keep such bytes until the stream has run.
struct JpegRegion {
  const unsigned char* data = nullptr;  // host bytes (caller keeps them until decode() returns)
  size_t size = 0;
  int top = 0, left = 0, height = 0, width = 0;  // region in stored pixels; whole image: 0,0,H,W
  uint8_t* dst = nullptr;
  size_t pitch = 0;
};

enum class JpegOutcome { kDecoded, kUnsupported, kCorrupt };

struct JpegResult {
  JpegOutcome outcome = JpegOutcome::kDecoded;
  std::string reason;     // for kUnsupported / kCorrupt: nvJPEG's status name and what failed
  bool hardware = false;  // decoded by the hardware (NVJPG) engine
};

// Not thread-safe: one decoder is used by one thread at a time (nvJPEG's states, buffers and
// parsed streams are per-thread objects). Give each decoding thread its own decoder.
class NvjpegDecoder {
 public:
  // Creates the nvJPEG handle on the current CUDA device: NVJPEG_BACKEND_HARDWARE for batched
  // decoding where the GPU has the engine (fallback: none, the batched path is then skipped), and
  // CUDA decoders (decoupled API: GPU_HYBRID, whose Huffman decoding runs on the GPU, for large
  // baseline images; HYBRID, Huffman on the CPU, for progressive and small ones) for everything
  // else. Throws std::runtime_error (ctrain::Error) with a clear message if
  // nvjpeg_unavailable_reason() is not empty or the handle cannot be created. max_batch >= 1 is
  // the number of regions decode() is expected to take at most (more work, with a reallocation).
  // decode() runs on this device whatever device is current on the calling thread.
  explicit NvjpegDecoder(int max_batch);
  ~NvjpegDecoder();
  NvjpegDecoder(const NvjpegDecoder&) = delete;
  NvjpegDecoder& operator=(const NvjpegDecoder&) = delete;
  bool has_hardware() const;
  // Enqueues the decode of every region on `stream` and returns one result per region, in order.
  // Images the hardware engine supports (with their ROI: nvjpegDecodeBatchedSupportedEx) go in one
  // nvjpegDecodeBatchedEx call; the rest (progressive, CMYK (allowed via SetAllowCMYK), 4:1:1, ...)
  // one by one through the CUDA decoders with the same ROI. If the batched call fails as a whole,
  // every image of it is retried one by one on that path so only the bad file is reported.
  // kUnsupported = nvJPEG refuses the format (NVJPEG_STATUS_JPEG_NOT_SUPPORTED or
  // IMPLEMENTATION_NOT_SUPPORTED, or parse says unsupported; also lossless, 12-bit, 2-component
  // and odd-sampling JPEGs) -> the caller uses a CPU decoder;
  // kCorrupt = BAD_JPEG / INCOMPLETE_BITSTREAM / parse failure on data, or no bytes.
  // Other failures (allocator, execution failed, internal error, a CUDA error) throw
  // std::runtime_error naming the status. A region outside the image is kCorrupt with a reason
  // giving both sizes; a null dst or a pitch under width*3 throws (a caller's bug).
  // nvJPEG may not see a truncated file (it pads the missing rows): check the bytes first where
  // that matters (image_truncation in data/decode.h).
  // Host-side work is synchronous (parsing, Huffman decoding of HYBRID images, and a wait for
  // this decoder's previous device work before its buffers are reused); device work is ordered
  // on `stream` (the caller syncs/records events before reading dst).
  std::vector<JpegResult> decode(const std::vector<JpegRegion>& regions, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctrain::data
