// The GPU image pipeline where this build has none (LibTorch without CUDA, no nvcc or no
// nvjpeg.h at configure time): every use says so, and --decode auto picks the CPU pipeline.
#include "core/error.h"
#include "data/gpu_image_folder.h"

namespace ctrain::data {

std::string gpu_pipeline_unavailable(const torch::Device& device) {
  if (!device.is_cuda()) return "the device is " + device.str() + ", not CUDA";
  return "this ctrain was built without the GPU image pipeline (it needs a CUDA LibTorch, nvcc and "
         "nvjpeg.h at configure time; see README, Build options)";
}

void set_nvjpeg_library(const std::string&) {}

struct GpuImageFolderSource::Impl {};

GpuImageFolderSource::GpuImageFolderSource(ImageFolderIndex, ImageTransform, ShardSampler, LoaderOptions,
                                           GpuLoaderOptions, torch::Device device) {
  throw Error("--decode gpu: " + gpu_pipeline_unavailable(device), "use --decode cpu");
}
GpuImageFolderSource::~GpuImageFolderSource() = default;
void GpuImageFolderSource::start_epoch(int64_t) {}
std::optional<Batch> GpuImageFolderSource::next() { return std::nullopt; }
int64_t GpuImageFolderSource::batches_per_epoch() const { return 0; }
int64_t GpuImageFolderSource::samples_per_epoch() const { return 0; }
GpuPipelineCounts GpuImageFolderSource::counts() const { return {}; }
bool GpuImageFolderSource::hardware_decoder() const { return false; }

}  // namespace ctrain::data
