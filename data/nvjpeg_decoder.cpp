// nvJPEG through dlopen (data/nvjpeg_library.h): nothing here links against libnvjpeg (see the
// header for why). The CUDA runtime is linked (events, devices).
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
#include <nvjpeg.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "data/nvjpeg_library.h"
#include "data/nvjpeg_state.h"

namespace ctrain::data {
namespace {

using nvjpeg::Api;
using nvjpeg::check;
using nvjpeg::library;
using nvjpeg::status_text;

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

}  // namespace

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
