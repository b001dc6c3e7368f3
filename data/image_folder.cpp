#include "data/image_folder.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <mutex>
#include <random>
#include <tuple>

#include "core/error.h"
#include "core/torch_error.h"
#include "core/fs.h"
#include "data/ordered_pool.h"

namespace ctrain::data {
namespace {

// Python's round(): ties to even, which std::nearbyint does in the default rounding mode.
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }

// splitmix64: decorrelates (seed, epoch, sample) into independent per-sample RNG seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The largest JPEG DCT scale (8, 4, 2) that still leaves at least the output's resolution
// where it is needed (the crop box for training, the resized image for eval): no detail
// the final image would show is thrown away.
int reduction_for(const SamplePlan& p, const ImageTransform& t, int height, int width) {
  for (int f : {8, 4, 2}) {
    if (t.mode == Augment::kTrain) {
      if (p.box.height / f >= t.size && p.box.width / f >= t.size) return f;
    } else if (height / f >= p.resize_h && width / f >= p.resize_w) {
      return f;
    }
  }
  return 1;
}

// The training crop box in the pixels of the image decoded at 1/reduce scale (scaled_h x
// scaled_w), kept inside it.
CropBox scale_box(const CropBox& b, int reduce, int scaled_h, int scaled_w) {
  if (reduce == 1) return b;
  CropBox s;
  s.top = std::clamp(b.top / reduce, 0, scaled_h - 1);
  s.left = std::clamp(b.left / reduce, 0, scaled_w - 1);
  s.height = std::clamp(py_round(static_cast<double>(b.height) / reduce), 1, scaled_h - s.top);
  s.width = std::clamp(py_round(static_cast<double>(b.width) / reduce), 1, scaled_w - s.left);
  return s;
}

// ToTensor + Normalize (+ the flip) of the size x size RGB pixels at `px` (rows `stride` bytes
// apart) into out[3][size][size].
void normalize_into(const uint8_t* px, size_t stride, bool flip, const ImageTransform& t, float* out) {
  const int size = t.size;
  const size_t plane = static_cast<size_t>(size) * size;
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = 1.0f / (255.0f * t.stdev[c]);
    shift[c] = -t.mean[c] / t.stdev[c];
  }
  for (int y = 0; y < size; ++y) {
    const uint8_t* row = px + static_cast<size_t>(y) * stride;
    for (int x = 0; x < size; ++x) {
      const uint8_t* p = row + static_cast<size_t>(flip ? size - 1 - x : x) * 3;
      const size_t o = static_cast<size_t>(y) * size + x;
      out[o] = p[0] * scale[0] + shift[0];
      out[plane + o] = p[1] * scale[1] + shift[1];
      out[2 * plane + o] = p[2] * scale[2] + shift[2];
    }
  }
}

// Renders into out[3][size][size] from `img`, which holds the pixels of the (scaled) image
// from (top, left) on: a whole decode has (0, 0), a region decode its region's corner.
// Training: `box` (in the scaled image's pixels) is resized to the output. Eval: the whole
// image is resized to the plan's size and `box` is the centre crop of that.
void render(const Image& img, int top, int left, const CropBox& box, const SamplePlan& p,
            const ImageTransform& t, float* out) {
  if (img.height < 1 || img.width < 1 ||
      img.rgb.size() != static_cast<size_t>(img.height) * img.width * 3) {
    throw Error("decoded image is empty or inconsistent (" + std::to_string(img.height) + "x" +
                std::to_string(img.width) + ")");
  }
  thread_local Image whole, output;  // reused: no allocation per image on a loader thread
  const bool train = t.mode == Augment::kTrain;
  if (!train) resize_rect(img, 0, 0, img.height, img.width, p.resize_h, p.resize_w, &whole);
  const Image& from = train ? img : whole;
  const int y0 = train ? box.top - top : box.top, x0 = train ? box.left - left : box.left;
  // The plan was made from the header's size; a crop outside the pixels actually decoded
  // would be a wild read, so it is an error instead.
  if (y0 < 0 || x0 < 0 || box.height < 1 || box.width < 1 || y0 + box.height > from.height ||
      x0 + box.width > from.width) {
    throw Error("crop " + std::to_string(box.height) + "x" + std::to_string(box.width) + " at (" +
                std::to_string(box.top) + ", " + std::to_string(box.left) +
                ") lies outside the decoded " + std::to_string(from.height) + "x" +
                std::to_string(from.width) + " image" +
                (top > 0 || left > 0 ? " region at (" + std::to_string(top) + ", " + std::to_string(left) + ")"
                                     : std::string()));
  }
  const size_t stride = static_cast<size_t>(from.width) * 3;
  if (box.height == t.size && box.width == t.size) {  // eval's centre crop: no resampling
    normalize_into(from.rgb.data() + static_cast<size_t>(y0) * stride + static_cast<size_t>(x0) * 3, stride,
                   p.flip, t, out);
    return;
  }
  resize_rect(from, y0, x0, box.height, box.width, t.size, t.size, &output);
  normalize_into(output.rgb.data(), static_cast<size_t>(t.size) * 3, p.flip, t, out);
}

// render() for a whole decoded image, with the transform planned from its own size.
void plan_and_render(const Image& img, const ImageTransform& t, std::mt19937_64& rng, float* out) {
  const SamplePlan plan = plan_sample(img.height, img.width, t, rng);
  render(img, 0, 0, plan.box, plan, t, out);
}


// The decode-and-render path proper; decode_and_transform() adds the error wrapping.
int decode_and_render(const std::string& bytes, const std::string& path, const ImageTransform& t,
                      const DecodeOptions& d, std::mt19937_64& rng, float* out, SamplePlan* used) {
  int h = 0, w = 0;
  if (!d.reduced_decode || !jpeg_size(bytes, &h, &w)) {
    const Image img = decode_within_limit(bytes, path, d.max_image_pixels);
    const SamplePlan plan = plan_sample(img.height, img.width, t, rng);
    if (used) *used = plan;
    if (t.mode == Augment::kEval) check_image_pixels(path, plan.resize_h, plan.resize_w, d.max_image_pixels);
    render(img, 0, 0, plan.box, plan, t, out);
    return 1;
  }
  check_image_pixels(path, h, w, d.max_image_pixels);  // before any decoding
  const SamplePlan plan = plan_sample(h, w, t, rng);
  if (used) *used = plan;
  if (t.mode == Augment::kEval) check_image_pixels(path, plan.resize_h, plan.resize_w, d.max_image_pixels);
  const int reduce = reduction_for(plan, t, h, w);
  // libjpeg's DCT scaling gives ceil(size / reduce).
  const int want_h = (h + reduce - 1) / reduce, want_w = (w + reduce - 1) / reduce;
  const bool train = t.mode == Augment::kTrain;
  const CropBox box = train ? scale_box(plan.box, reduce, want_h, want_w) : plan.box;
  // What the transform reads of the scaled image: the crop box, or all of it for eval's resize.
  const CropBox need = train ? box : CropBox{0, 0, want_h, want_w};
  thread_local ImageRegion region;  // reused: no allocation per image on a loader thread
  if (decode_jpeg_region(bytes, path, reduce, need.top, need.left, need.height, need.width, &region)) {
    render(region.img, region.top, region.left, box, plan, t, out);
    return reduce;
  }
  const Image img = decode_bytes(bytes, path, reduce);
  // Any other size means the decoder and the header disagree (a rotated decode, a second
  // frame), and the plan does not fit.
  if (img.height != want_h || img.width != want_w) {
    throw Error(path + ": decoded " + std::to_string(img.height) + "x" + std::to_string(img.width) +
                    " pixels, but its JPEG header says " + std::to_string(h) + "x" +
                    std::to_string(w) + (reduce > 1 ? " (at 1/" + std::to_string(reduce) + " scale: " +
                                                          std::to_string(want_h) + "x" +
                                                          std::to_string(want_w) + ")"
                                                    : std::string()),
                "use --skip-bad-images to skip it");
  }
  render(img, 0, 0, box, plan, t, out);
  return reduce;
}

// Runs fn(); any exception becomes a ctrain::Error that names `path`, so the loader can treat
// every per-image failure alike (--skip-bad-images) and the message says which file it was.
template <typename Fn>
void naming_errors(const std::string& path, Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    if (std::string(e.what()).rfind(path, 0) == 0) throw;
    throw Error(path + ": " + e.what(), "use --skip-bad-images to skip it");
  } catch (const std::exception& e) {  // OpenCV's, std::bad_alloc, std::length_error, ...
    throw Error(path + ": cannot decode or transform image (" + message_of(e) + ")",
                "use --skip-bad-images to skip it");
  }
}

}  // namespace

Image decode_within_limit(const std::string& bytes, const std::string& path, int64_t limit) {
  int h = 0, w = 0;
  if (image_header_size(bytes, &h, &w)) check_image_pixels(path, h, w, limit);
  Image img = decode_bytes(bytes, path, 1);
  check_image_pixels(path, img.height, img.width, limit);
  return img;
}

void SkippedImages::note(const std::string& why) {
  const std::string line = why.substr(0, why.find('\n'));
  std::lock_guard<std::mutex> lock(mu_);
  if (named_.count(line) != 0) return;
  if (named_.size() < kNamed) {
    named_.insert(line);
    std::fprintf(stderr, "skipped (--skip-bad-images): %s\n", line.c_str());
  } else if (!said_rest_) {
    said_rest_ = true;
    std::fprintf(stderr, "skipped (--skip-bad-images): more unreadable images; they are counted, not named\n");
  }
}

void check_image_pixels(const std::string& path, int64_t height, int64_t width, int64_t limit) {
  if (limit > 0 && height * width > limit) {
    throw Error(path + ": " + std::to_string(height) + "x" + std::to_string(width) + " = " +
                    std::to_string(height * width) + " pixels is above --max-image-pixels " +
                    std::to_string(limit),
                "raise --max-image-pixels (0: no limit), or --skip-bad-images to skip it");
  }
}

SamplePlan plan_sample(int height, int width, const ImageTransform& t, std::mt19937_64& rng) {
  SamplePlan p;
  if (t.mode == Augment::kTrain) {
    p.box = random_resized_crop_box(height, width, rng);
    p.flip = std::uniform_real_distribution<double>(0.0, 1.0)(rng) < 0.5;
  } else {
    std::tie(p.resize_h, p.resize_w) = resize_shorter_side(height, width, t.resize);
    p.box = center_crop_box(p.resize_h, p.resize_w, t.size);
  }
  return p;
}

std::mt19937_64 sample_rng(uint64_t seed, int64_t epoch, int64_t sample) {
  return std::mt19937_64(mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(sample)));
}

int decode_and_transform(const std::string& bytes, const std::string& path,
                         const ImageTransform& t, const DecodeOptions& d, std::mt19937_64& rng,
                         float* out, SamplePlan* plan) {
  int reduce = 1;
  naming_errors(path, [&] { reduce = decode_and_render(bytes, path, t, d, rng, out, plan); });
  return reduce;
}

CropBox random_resized_crop_box(int height, int width, std::mt19937_64& rng, double scale_min,
                                double scale_max, double ratio_min, double ratio_max) {
  const double area = static_cast<double>(height) * width;
  std::uniform_real_distribution<double> scale(scale_min, scale_max);
  std::uniform_real_distribution<double> log_ratio(std::log(ratio_min), std::log(ratio_max));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * scale(rng);
    const double aspect = std::exp(log_ratio(rng));
    const int w = py_round(std::sqrt(target * aspect));
    const int h = py_round(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int top = std::uniform_int_distribution<int>(0, height - h)(rng);
      const int left = std::uniform_int_distribution<int>(0, width - w)(rng);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio_min) {
    h = py_round(w / ratio_min);
  } else if (in_ratio > ratio_max) {
    w = py_round(h * ratio_max);
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

std::pair<int, int> resize_shorter_side(int height, int width, int size) {
  if (width <= height) {
    return {static_cast<int>(static_cast<int64_t>(size) * height / width), size};
  }
  return {size, static_cast<int>(static_cast<int64_t>(size) * width / height)};
}

CropBox center_crop_box(int height, int width, int crop) {
  if (crop > height || crop > width) {
    throw Error("center crop " + std::to_string(crop) + " is larger than the resized image " +
                std::to_string(height) + "x" + std::to_string(width));
  }
  return {py_round((height - crop) / 2.0), py_round((width - crop) / 2.0), crop, crop};
}

torch::Tensor apply_transform(const Image& img, const ImageTransform& t, std::mt19937_64& rng) {
  torch::Tensor out = torch::empty({3, t.size, t.size}, torch::kFloat32);
  plan_and_render(img, t, rng, out.data_ptr<float>());
  return out;
}

struct ImageFolderSource::Impl {
  struct Epoch {
    int64_t epoch = -1;
    torch::Tensor order;  // this rank's sample indices
  };

  ImageFolderIndex index;
  ImageTransform transform;
  ShardSampler sampler;
  LoaderOptions opt;

  std::atomic<int64_t> bad{0}, reduced{0};
  SkippedImages skipped;
  std::mutex cache_mu;
  std::map<int64_t, std::shared_ptr<const Image>> cache;
  // Last: its threads use the members above, so it stops first.
  OrderedPool<Batch, Epoch> pool;

  Impl(ImageFolderIndex i, ImageTransform t, ShardSampler s, LoaderOptions o)
      : index(std::move(i)), transform(std::move(t)), sampler(std::move(s)), opt(o),
        pool(o.workers, o.prefetch_batches, [this](const Epoch& e, int64_t b) { return build(e.epoch, e.order, b); }) {}

  std::shared_ptr<const Image> load(int64_t sample) {
    if (opt.cache_decoded) {
      std::lock_guard<std::mutex> lock(cache_mu);
      auto it = cache.find(sample);
      if (it != cache.end()) return it->second;
    }
    const std::string& path = index.samples[sample].first;
    auto img = std::make_shared<const Image>(decode_within_limit(read_file(path), path, opt.max_image_pixels));
    if (opt.cache_decoded) {
      std::lock_guard<std::mutex> lock(cache_mu);
      cache[sample] = img;
    }
    return img;
  }

  // Decodes and transforms one sample. JPEGs are decoded at a reduced scale when the planned
  // crop allows it (see reduction_for); cached images are kept at full size.
  void transform_sample(int64_t sample, std::mt19937_64& rng, float* out) {
    const std::string& path = index.samples[sample].first;
    if (!opt.cache_decoded) {
      const int reduce = decode_and_transform(read_file(path), path, transform,
                                              {opt.reduced_decode, opt.max_image_pixels}, rng, out);
      if (reduce > 1) ++reduced;
      return;
    }
    naming_errors(path, [&] {
      plan_and_render(*load(sample), transform, rng, out);
    });
  }

  // Builds batch b of `ep` from `ord`: pure in its inputs, so any thread may build any batch.
  Batch build(int64_t ep, const torch::Tensor& ord, int64_t b) {
    const int64_t n = ord.size(0);
    const int64_t begin = b * opt.batch_size, end = std::min(n, begin + opt.batch_size);
    const int s = transform.size;
    torch::Tensor input = torch::empty({end - begin, 3, s, s}, torch::kFloat32);
    torch::Tensor target = torch::empty({end - begin}, torch::kInt64);
    int64_t kept = 0;
    const int64_t* ids = ord.data_ptr<int64_t>();
    for (int64_t k = begin; k < end; ++k) {
      const int64_t sample = ids[k];
      std::mt19937_64 rng = sample_rng(opt.seed, ep, sample);
      try {
        transform_sample(sample, rng, input[kept].data_ptr<float>());
      } catch (const Error& e) {  // every per-image failure arrives as an Error naming the file
        if (!opt.skip_bad_images) throw;
        ++bad;
        skipped.note(e.what());
        continue;
      }
      target[kept] = index.samples[sample].second;
      ++kept;
    }
    if (kept == 0) {
      throw Error("every image of batch " + std::to_string(b) + " under " + index.root +
                  " was unreadable");
    }
    Batch batch{input.slice(0, 0, kept), target.slice(0, 0, kept)};
    if (opt.pin_memory) {
      batch.input = batch.input.pin_memory();
      batch.target = batch.target.pin_memory();
    }
    return batch;
  }
};

void LoaderOptions::validate() const {
  if (batch_size <= 0) throw ConfigError("--batch-size must be positive");
  if (workers < 0) throw ConfigError("--workers must be >= 0 (0: decode on the training thread)");
  if (prefetch_batches < 1) throw ConfigError("--prefetch must be >= 1");
  if (max_image_pixels < 0) throw ConfigError("--max-image-pixels must be >= 0 (0: no limit)");
}

ImageFolderSource::ImageFolderSource(ImageFolderIndex index, ImageTransform transform,
                                     ShardSampler sampler, LoaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(index), std::move(transform), std::move(sampler), options)) {
  options.validate();
}

ImageFolderSource::~ImageFolderSource() = default;

void ImageFolderSource::start_epoch(int64_t epoch) {
  impl_->pool.start({epoch, impl_->sampler.indices(epoch)}, batches_per_epoch());
}

std::optional<Batch> ImageFolderSource::next() {
  if (!impl_->pool.started()) throw Error("ImageFolderSource::next() before start_epoch()");
  return impl_->pool.next();
}

int64_t ImageFolderSource::batches_per_epoch() const {
  return (impl_->sampler.samples_per_rank() + impl_->opt.batch_size - 1) / impl_->opt.batch_size;
}
int64_t ImageFolderSource::samples_per_epoch() const { return impl_->sampler.samples_per_rank(); }
int64_t ImageFolderSource::bad_images() const { return impl_->bad.load(); }
int64_t ImageFolderSource::reduced_decodes() const { return impl_->reduced.load(); }
const ImageFolderIndex& ImageFolderSource::index() const { return impl_->index; }

}  // namespace ctrain::data
