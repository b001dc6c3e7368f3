#pragma once
// The GPU pipeline's one augment kernel (augment_cuda.cu, nvcc): every sample of a batch
// cropped, resized, flipped and normalized from its decoded region straight into the batch
// tensor, in the layout and precision the training step takes. Free of LibTorch so that nvcc
// compiles it alone, in seconds.
#include <cuda_runtime_api.h>

#include "data/augment.h"

namespace ctrain::data {

enum class BatchLayout { kNCHW, kNHWC };  // NHWC: a [B, 3, S, S] tensor in channels-last memory
enum class BatchDtype { kFloat32, kBFloat16 };

// Renders samples[0..n) (descriptors in device memory; their pixels on the device) into `out`
// (device, n x 3 x size x size in `layout` and `dtype`) on `stream`. Returns the launch's error.
cudaError_t launch_augment(const augment::Sample* samples, int n, int size, const augment::Normalize& norm,
                           BatchLayout layout, BatchDtype dtype, void* out, cudaStream_t stream);

}  // namespace ctrain::data
