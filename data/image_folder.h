#pragma once
// torchvision's ImageFolder and its classification transforms, with a threaded loader.
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/decode.h"
#include "data/sampler.h"

namespace ctrain::data {

struct ImageFolderIndex {
  std::string root;
  std::vector<std::string> classes;  // sorted folder names; index = class id
  std::vector<std::pair<std::string, int64_t>> samples;  // (path, class), sorted like torchvision
};

// root/<class>/<image>: classes are the sorted subfolder names; images are files with a
// known image extension (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp), any case.
// Errors: missing root, no class folders, a class folder without images.
ImageFolderIndex index_image_folder(const std::string& root);

// The validation set must not have classes the training set lacks (ids would not match).
void check_val_classes(const ImageFolderIndex& train, const ImageFolderIndex& val);

// Crop box (top, left, height, width) in source pixels.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

// torchvision.transforms.RandomResizedCrop.get_params with scale (0.08, 1) and ratio
// (3/4, 4/3): ten tries at a random area and log-uniform aspect ratio, then the central crop
// clamped to the ratio range. Draws from `rng`.
CropBox random_resized_crop_box(int height, int width, std::mt19937_64& rng,
                                double scale_min = 0.08, double scale_max = 1.0,
                                double ratio_min = 3.0 / 4, double ratio_max = 4.0 / 3);

// torchvision's Resize(256) (shorter side to `size`, longer side truncated like int()) followed
// by CenterCrop(crop) (offsets rounded like round()): the crop box in resized pixels.
std::pair<int, int> resize_shorter_side(int height, int width, int size);
CropBox center_crop_box(int height, int width, int crop);

enum class Augment { kTrain, kEval };

struct ImageTransform {
  Augment mode = Augment::kTrain;
  int size = 224;         // output side
  int resize = 256;       // eval: shorter side before the center crop
  std::vector<float> mean{0.485f, 0.456f, 0.406f};  // ImageNet
  std::vector<float> stdev{0.229f, 0.224f, 0.225f};
};

// The geometry of one sample's transform, decided from the stored size before decoding (so a
// decoder can pick a reduced scale or a region) and drawn from `rng` in torchvision's order:
// crop box, then flip. The CPU and the GPU pipelines both take their crops from here.
struct SamplePlan {
  CropBox box;                     // train: in stored pixels; eval: in resized pixels
  bool flip = false;
  int resize_h = 0, resize_w = 0;  // eval: size after Resize
};
SamplePlan plan_sample(int height, int width, const ImageTransform& t, std::mt19937_64& rng);

// Each sample's randomness: a generator seeded from (seed, epoch, sample index), so batches
// are the same whatever the number of workers, and on the CPU and GPU pipelines alike.
std::mt19937_64 sample_rng(uint64_t seed, int64_t epoch, int64_t sample);

// Applies the transform: train = RandomResizedCrop + RandomHorizontalFlip(0.5); eval =
// Resize + CenterCrop. Then to float CHW in [0,1] and Normalize. [3, size, size] float.
torch::Tensor apply_transform(const Image& img, const ImageTransform& t, std::mt19937_64& rng);

// PIL refuses images above 2 x Image.MAX_IMAGE_PIXELS (DecompressionBombError); so does ctrain.
constexpr int64_t kDefaultMaxImagePixels = 2 * 89478485;

// Refuses (as a bad image, naming `path`) a height x width image above `limit` pixels
// (--max-image-pixels; 0: no limit).
void check_image_pixels(const std::string& path, int64_t height, int64_t width, int64_t limit);

// decode_bytes() within --max-image-pixels: the size in the header, where image_header_size
// reads one, is judged before the decoder allocates the frame, and the decoded size after.
Image decode_within_limit(const std::string& bytes, const std::string& path, int64_t limit);

struct DecodeOptions {
  bool reduced_decode = true;  // see LoaderOptions
  // Refuse (as a bad image) a file, or an eval resize, above this many pixels; 0: no limit.
  int64_t max_image_pixels = kDefaultMaxImagePixels;
};

// The loader's whole per-image path on encoded bytes: size from the header, the transform
// planned from it, a (reduced-scale) decode, crop, resize, flip, normalize into
// out[3][t.size][t.size]. Any failure (corrupt data, a decoded size other than the planned
// one, too many pixels, an allocation failure) is a ctrain::Error naming `path`. Returns the
// JPEG scale reduction used (1: a full decode); `plan`, if given, receives the sample's plan.
int decode_and_transform(const std::string& bytes, const std::string& path,
                         const ImageTransform& t, const DecodeOptions& d, std::mt19937_64& rng,
                         float* out, SamplePlan* plan = nullptr);

// --skip-bad-images: each skipped file is named on stderr with why, once (not each epoch), as
// it is skipped, so a user can mend or delete it; after the first kNamed, one line says the
// rest are counted only. The run's end prints the count. Safe to call from loader threads.
class SkippedImages {
 public:
  static constexpr size_t kNamed = 20;
  // `why` is the image's error message, which names its file; only its first line is printed.
  void note(const std::string& why);

 private:
  std::mutex mu_;
  std::set<std::string> named_;
  bool said_rest_ = false;
};

struct LoaderOptions {
  int64_t batch_size = 4;
  int workers = 2;           // decode/augment threads
  int prefetch_batches = 4;  // ready batches kept ahead of the consumer
  bool cache_decoded = false;
  bool skip_bad_images = false;
  bool pin_memory = false;   // for CUDA: page-locked batches copy asynchronously
  // Decode JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when the crop still gets at
  // least the output's resolution: the trick fast loaders use against PIL. Pixels differ
  // slightly from a full decode + resize; --full-decode turns it off.
  bool reduced_decode = true;
  int64_t max_image_pixels = kDefaultMaxImagePixels;  // --max-image-pixels; 0: no limit
  uint64_t seed = 42;

  // Throws ConfigError naming the flag of the first bad option (--batch-size, --workers,
  // --prefetch, --max-image-pixels). The sources call it; a program may call it first, before
  // it reads any data.
  void validate() const;
};

// A BatchSource over an image folder: batches are decoded and augmented on worker threads
// and delivered in order. Each sample's randomness comes from (seed, epoch, sample index), so
// the batches are the same whatever the number of workers.
class ImageFolderSource : public BatchSource {
 public:
  ImageFolderSource(ImageFolderIndex index, ImageTransform transform, ShardSampler sampler,
                    LoaderOptions options);
  ~ImageFolderSource() override;
  void start_epoch(int64_t epoch) override;
  std::optional<Batch> next() override;
  int64_t batches_per_epoch() const override;
  int64_t samples_per_epoch() const override;
  // Images skipped as unreadable so far (with skip_bad_images).
  int64_t bad_images() const;
  // Images decoded at a reduced JPEG scale so far (see LoaderOptions::reduced_decode).
  int64_t reduced_decodes() const;
  const ImageFolderIndex& index() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctrain::data
