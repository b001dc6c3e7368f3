#pragma once
// The image-folder pipeline on the GPU (--decode gpu): file reading, header parsing and the
// crop plan on CPU threads (the same planner and per-sample seeds as ImageFolderSource, so the
// two see the same crops), the JPEG decode of only the planned region with nvJPEG (the GPU's
// hardware JPEG engine where it has one), and crop + resize + flip + normalize in one kernel
// (data/augment_cuda.cu) straight into the device batch, in the layout and precision the step
// takes. Batch n+1 is decoded and augmented on its own stream while the step runs batch n.
//
// Built where LibTorch has CUDA, nvcc is found and nvJPEG's header is (the torch2 lane, the GPU
// node); elsewhere gpu_image_folder_none.cpp says why it is not.
#include <torch/torch.h>

#include <memory>
#include <string>

#include "data/batch.h"
#include "data/image_folder.h"
#include "data/sampler.h"

namespace ctrain::data {

// "" when this process can run the GPU pipeline on `device`; else why not, in words (no such
// build, libnvjpeg does not load, not a CUDA device).
std::string gpu_pipeline_unavailable(const torch::Device& device);

// A libnvjpeg file to try before the usual places (ctrain-birds passes $CTRAIN_NVJPEG_LIBRARY);
// takes effect if called before the first gpu_pipeline_unavailable() or GPU source. Does
// nothing in a build without the GPU pipeline.
void set_nvjpeg_library(const std::string& path);

struct GpuLoaderOptions {
  bool channels_last = false;  // batches in NHWC memory (the step's channels-last input)
  bool bfloat16 = false;       // batches in bf16 (--amp bf16), else float32
};

struct GpuPipelineCounts {
  int64_t hardware = 0;  // decoded by the GPU's hardware JPEG engine
  int64_t cuda = 0;      // decoded by nvJPEG's CUDA decoders (progressive, CMYK, no engine)
  int64_t cpu = 0;       // decoded on the CPU (not a JPEG, or nvJPEG refuses it)
  int64_t bad = 0;       // skipped as unreadable (--skip-bad-images)
};

// A BatchSource whose batches are on `device` already. LoaderOptions as for ImageFolderSource:
// batch_size, workers (file-reading threads), prefetch_batches (batches decoded ahead),
// skip_bad_images, max_image_pixels, seed; cache_decoded, reduced_decode and pin_memory do
// not apply. Throws ctrain::Error naming the reason where gpu_pipeline_unavailable() is not "".
class GpuImageFolderSource : public BatchSource {
 public:
  GpuImageFolderSource(ImageFolderIndex index, ImageTransform transform, ShardSampler sampler,
                       LoaderOptions options, GpuLoaderOptions gpu, torch::Device device);
  ~GpuImageFolderSource() override;
  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t batches_per_epoch() const override;
  int64_t samples_per_epoch() const override;
  GpuPipelineCounts counts() const;
  bool hardware_decoder() const;  // the GPU has a hardware JPEG engine and nvJPEG uses it

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctrain::data
