// One thread per output pixel (all three channels), one grid row per sample. The arithmetic is
// data/augment.h's, shared with the host; this file must be compiled with -fmad=false (see there).
#include <cuda_bf16.h>

#include "data/augment_cuda.h"

namespace ctrain::data {
namespace {

template <BatchLayout L, typename T>
__global__ void augment_kernel(const augment::Sample* __restrict__ samples, int size,
                               augment::Normalize norm, T* __restrict__ out) {
  __shared__ augment::Sample s;
  if (threadIdx.x == 0) s = samples[blockIdx.y];
  __syncthreads();
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= size * size) return;
  const int y = p / size, x = p % size;
  const int64_t b = blockIdx.y, plane = int64_t{size} * size;
  for (int c = 0; c < 3; ++c) {
    const float v = augment::normalized(s, norm, size, y, x, c);
    const int64_t at = L == BatchLayout::kNCHW ? (b * 3 + c) * plane + p : (b * plane + p) * 3 + c;
    if constexpr (sizeof(T) == 2) {
      out[at] = __float2bfloat16_rn(v);  // round to nearest even, as a tensor's .to(bfloat16)
    } else {
      out[at] = v;
    }
  }
}

template <BatchLayout L, typename T>
cudaError_t launch(const augment::Sample* samples, int n, int size, const augment::Normalize& norm, void* out,
                   cudaStream_t stream) {
  constexpr int kThreads = 256;
  const dim3 grid((size * size + kThreads - 1) / kThreads, n);
  augment_kernel<L, T><<<grid, kThreads, 0, stream>>>(samples, size, norm, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_augment(const augment::Sample* samples, int n, int size, const augment::Normalize& norm,
                           BatchLayout layout, BatchDtype dtype, void* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (n > 65535) return cudaErrorInvalidValue;  // grid rows
  const bool bf16 = dtype == BatchDtype::kBFloat16;
  if (layout == BatchLayout::kNCHW) {
    return bf16 ? launch<BatchLayout::kNCHW, __nv_bfloat16>(samples, n, size, norm, out, stream)
                : launch<BatchLayout::kNCHW, float>(samples, n, size, norm, out, stream);
  }
  return bf16 ? launch<BatchLayout::kNHWC, __nv_bfloat16>(samples, n, size, norm, out, stream)
              : launch<BatchLayout::kNHWC, float>(samples, n, size, norm, out, stream);
}

}  // namespace ctrain::data
