#include "data/nvjpeg_state.h"

namespace ctrain::data {

using nvjpeg::check;
using nvjpeg::status_text;

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

}  // namespace ctrain::data
