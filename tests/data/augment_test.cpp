// The GPU pipeline's per-pixel arithmetic (data/augment.h), run on the host, against the CPU
// pipeline: OpenCV's cv::resize value for value, and the whole sample (plan, region, resize,
// flip, normalize) bit for bit. The kernel runs these same functions on the GPU.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "data/decode.h"
#include "data/gpu_plan.h"
#include "data/image_folder.h"

namespace ctrain::data {
namespace {

Image random_image(int h, int w, std::mt19937& rng) {
  Image img;
  img.height = h;
  img.width = w;
  img.rgb.resize(static_cast<size_t>(h) * w * 3);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& v : img.rgb) v = static_cast<uint8_t>(byte(rng));
  return img;
}

// What the kernel reads for a whole-image resize of `img` to (dh, dw).
std::vector<uint8_t> resized_by_kernel_arithmetic(const Image& img, int dh, int dw) {
  augment::Sample s;
  s.resize = augment::plan_resize(img.height, img.width, dh, dw);
  attach_pixels(&s, {0, 0, img.height, img.width}, img.rgb.data(), int64_t{img.width} * 3);
  std::vector<uint8_t> out(static_cast<size_t>(dh) * dw * 3);
  // Non-square outputs: read each row of the dh x dw image as the window of a square call.
  for (int y = 0; y < dh; ++y) {
    for (int x = 0; x < dw; ++x) {
      for (int c = 0; c < 3; ++c) {
        s.win_top = y;
        s.win_left = x;
        out[(static_cast<size_t>(y) * dw + x) * 3 + c] = augment::resampled(s, 1, 0, 0, c);
      }
    }
  }
  return out;
}

TEST(AugmentArithmeticTest, ResizeEqualsOpenCvValueForValue) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> side(1, 160);
  std::vector<std::array<int, 4>> cases = {
      {224, 224, 224, 224}, {448, 448, 224, 224}, {672, 448, 224, 224}, {500, 375, 224, 224},
      {100, 150, 224, 224}, {150, 300, 224, 224}, {300, 150, 224, 224}, {7, 9, 3, 2},
      {1, 1, 5, 5},         {490, 98, 10, 2},     {256, 341, 256, 341}, {768, 1024, 256, 341}};
  for (int i = 0; i < 120; ++i) cases.push_back({side(rng), side(rng), side(rng), side(rng)});
  for (const auto& [sh, sw, dh, dw] : cases) {
    const Image img = random_image(sh, sw, rng);
    Image want;
    resize_rect(img, 0, 0, sh, sw, dh, dw, &want);  // the CPU pipeline's resize (OpenCV)
    const auto got = resized_by_kernel_arithmetic(img, dh, dw);
    size_t wrong = 0, first = 0;
    for (size_t k = 0; k < got.size(); ++k) {
      if (got[k] != want.rgb[k] && wrong++ == 0) first = k;
    }
    EXPECT_EQ(wrong, 0u) << sh << "x" << sw << " -> " << dh << "x" << dw << " (mode "
                         << augment::plan_resize(sh, sw, dh, dw).mode << "): first at " << first
                         << ": " << int(got[first]) << " vs OpenCV " << int(want.rgb[first]);
  }
}

// A camera-like photo: smooth gradients, a few hard edges and sensor noise, as JPEG.
std::string photo_jpeg(int h, int w, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 6);
  cv::Mat img(h, w, CV_8UC3);
  const double fx = 0.01 + (seed % 7) * 0.004, fy = 0.013 + (seed % 5) * 0.003;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      auto& px = img.at<cv::Vec3b>(y, x);
      const bool edge = (x * 3 + y * 2) % 97 < 40;
      px[0] = cv::saturate_cast<uchar>(120 + 90 * std::sin(x * fx) + (edge ? 40 : 0) + noise(rng));
      px[1] = cv::saturate_cast<uchar>(100 + 80 * std::cos(y * fy) + noise(rng));
      px[2] = cv::saturate_cast<uchar>(128 + 60 * std::sin((x + y) * 0.02) - (edge ? 30 : 0) + noise(rng));
    }
  }
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 90});
  return std::string(buf.begin(), buf.end());
}

// The whole per-sample path of the GPU pipeline, with the decoder's region copied out of a
// whole decode (as nvJPEG's region decode delivers it) and the kernel's arithmetic on the host,
// equals the CPU pipeline bit for bit: the same plan from the same seed, the same pixels.
TEST(AugmentArithmeticTest, SamePlanAndPixelsAsTheCpuPipeline) {
  const std::vector<std::pair<int, int>> sizes = {{375, 500}, {768, 1024}, {120, 90}, {224, 224}, {300, 1000}};
  int samples = 0, flipped = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto [h, w] = sizes[i];
    const std::string bytes = photo_jpeg(h, w, static_cast<uint32_t>(i + 1));
    const Image whole = decode_bytes(bytes, "photo.jpg");
    for (const Augment mode : {Augment::kTrain, Augment::kEval}) {
      ImageTransform t;
      t.mode = mode;
      t.size = mode == Augment::kTrain ? 224 : 112;
      t.resize = 128;
      for (int64_t sample = 0; sample < 6; ++sample) {
        std::vector<float> cpu(3 * t.size * t.size), gpu(cpu.size());
        std::mt19937_64 rng_cpu = sample_rng(42, 3, sample), rng_gpu = rng_cpu;
        SamplePlan used;
        decode_and_transform(bytes, "photo.jpg", t, {/*reduced_decode=*/false}, rng_cpu, cpu.data(), &used);

        int sh = 0, sw = 0;
        ASSERT_TRUE(jpeg_size(bytes, &sh, &sw));
        const SamplePlan plan = plan_sample(sh, sw, t, rng_gpu);
        EXPECT_EQ(plan.box.top, used.box.top);
        EXPECT_EQ(plan.box.left, used.box.left);
        EXPECT_EQ(plan.box.height, used.box.height);
        EXPECT_EQ(plan.box.width, used.box.width);
        EXPECT_EQ(plan.flip, used.flip);
        flipped += plan.flip;

        augment::Sample s = describe_sample(plan, t, sh, sw);
        const Region r = region_read(s, t.size);
        ASSERT_GE(r.top, 0);
        ASSERT_GE(r.left, 0);
        ASSERT_LE(r.top + r.height, sh);
        ASSERT_LE(r.left + r.width, sw);
        if (mode == Augment::kEval) {  // only the centre crop's footprint is decoded
          EXPECT_LT(int64_t{r.height} * r.width, int64_t{sh} * sw);
        }
        // The region alone, in a buffer with a padded pitch, as the GPU decoder writes it.
        const int64_t pitch = int64_t{r.width} * 3 + 13;
        std::vector<uint8_t> region(static_cast<size_t>(pitch) * r.height, 0xAB);
        for (int y = 0; y < r.height; ++y) {
          std::memcpy(region.data() + y * pitch,
                      whole.rgb.data() + (static_cast<size_t>(r.top + y) * sw + r.left) * 3,
                      static_cast<size_t>(r.width) * 3);
        }
        attach_pixels(&s, r, region.data(), pitch);
        render_on_host(s, normalize_of(t), t.size, gpu.data());
        size_t wrong = 0;
        for (size_t k = 0; k < cpu.size(); ++k) wrong += std::memcmp(&cpu[k], &gpu[k], sizeof(float)) != 0;
        EXPECT_EQ(wrong, 0u) << h << "x" << w << (mode == Augment::kTrain ? " train" : " eval")
                             << " sample " << sample << ": crop " << plan.box.height << "x" << plan.box.width;
        ++samples;
      }
    }
  }
  EXPECT_EQ(samples, 60);
  EXPECT_GT(flipped, 0);  // both branches of the flip were exercised
  EXPECT_LT(flipped, samples);
}

TEST(AugmentArithmeticTest, APlanThatDoesNotFitIsAnError) {
  ImageTransform t;
  SamplePlan p;
  p.box = {10, 10, 100, 100};
  EXPECT_THROW(describe_sample(p, t, 50, 200), ctrain::Error);
}

}  // namespace
}  // namespace ctrain::data
