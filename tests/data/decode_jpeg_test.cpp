// JPEGs decoded by region (libjpeg-turbo's crop and skip) against whole decodes: the same
// pixels for every chroma subsampling, progressive files, grayscale and every DCT scale; the
// same transformed samples as the whole-image path; CMYK left to OpenCV; bad files named.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdio>
#include <jpeglib.h>

#include <random>

#include "core/error.h"
#include "data/decode.h"
#include "data/image_folder.h"

namespace ctrain::data {
namespace {

// A JPEG written with libjpeg itself, so the test controls what OpenCV's writer does not: the
// chroma subsampling (h_samp x v_samp of the first component), progressive scans, grayscale
// and CMYK. `px` holds `channels` (1, 3 or 4) bytes per pixel.
std::string write_jpeg(const std::vector<uint8_t>& px, int height, int width, int channels,
                       int h_samp = 2, int v_samp = 2, bool progressive = false) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(width);
  c.image_height = static_cast<JDIMENSION>(height);
  c.input_components = channels;
  c.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 90, TRUE);
  if (channels == 3) {
    c.comp_info[0].h_samp_factor = h_samp;
    c.comp_info[0].v_samp_factor = v_samp;
  }
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + static_cast<size_t>(c.next_scanline) * width * channels;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::string out(reinterpret_cast<char*>(buf), size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

// Photo-like pixels: smooth gradients plus noise, so every block has detail.
std::vector<uint8_t> pixels(int height, int width, int channels, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(0, 40);
  std::vector<uint8_t> px(static_cast<size_t>(height) * width * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int k = 0; k < channels; ++k) {
        px[(static_cast<size_t>(y) * width + x) * channels + k] =
            static_cast<uint8_t>((x * (k + 1) / 3 + y * (3 - k) / 4 + noise(rng)) % 256);
      }
    }
  }
  return px;
}

struct Case {
  const char* name;
  int channels, h_samp, v_samp;
  bool progressive;
};

TEST(JpegRegionTest, SamePixelsAsTheWholeDecodeAtEveryScale) {
  const Case cases[] = {{"4:2:0", 3, 2, 2, false}, {"4:2:2", 3, 2, 1, false}, {"4:4:4", 3, 1, 1, false},
                        {"4:2:0 progressive", 3, 2, 2, true}, {"grayscale", 1, 1, 1, false}};
  std::mt19937 rng(3);
  int compared = 0;
  for (const Case& c : cases) {
    const int height = 301, width = 413;  // not multiples of an iMCU
    const std::string jpeg = write_jpeg(pixels(height, width, c.channels, 7), height, width, c.channels,
                                        c.h_samp, c.v_samp, c.progressive);
    for (int reduce : {1, 2, 4, 8}) {
      const Image whole = decode_bytes(jpeg, "whole.jpg", reduce);  // OpenCV
      ASSERT_EQ(whole.height, (height + reduce - 1) / reduce) << c.name;
      for (int trial = 0; trial < 24; ++trial) {
        // Rectangles anywhere, including the first and last rows and columns.
        const int rh = std::uniform_int_distribution<int>(1, whole.height)(rng);
        const int rw = std::uniform_int_distribution<int>(1, whole.width)(rng);
        const int top = trial == 0 ? 0 : std::uniform_int_distribution<int>(0, whole.height - rh)(rng);
        const int left = trial == 1 ? whole.width - rw : std::uniform_int_distribution<int>(0, whole.width - rw)(rng);
        ImageRegion r;
        ASSERT_TRUE(decode_jpeg_region(jpeg, "region.jpg", reduce, top, left, rh, rw, &r)) << c.name;
        ASSERT_LE(r.top, top) << "the region covers the rectangle asked for";
        ASSERT_GE(r.top + r.img.height, top + rh);
        ASSERT_LE(r.left, left);
        ASSERT_GE(r.left + r.img.width, left + rw);
        ASSERT_LE(r.top + r.img.height, whole.height);
        ASSERT_LE(r.left + r.img.width, whole.width);
        ASSERT_LE(r.img.height, rh + 16) << "no more rows than the margins";
        for (int y = top; y < top + rh; ++y) {
          const uint8_t* got = r.img.rgb.data() + (static_cast<size_t>(y - r.top) * r.img.width + (left - r.left)) * 3;
          const uint8_t* want = whole.rgb.data() + (static_cast<size_t>(y) * whole.width + left) * 3;
          ASSERT_TRUE(std::equal(got, got + static_cast<size_t>(rw) * 3, want))
              << c.name << ", 1/" << reduce << ", row " << y << " of the rectangle at (" << top << ", "
              << left << ") " << rh << "x" << rw;
        }
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 5 * 4 * 24);
}

// The loader's path with region decoding gives the very tensor the whole-image path gives:
// on a 300-pixel image every RandomResizedCrop needs the full scale, so the two differ only
// in how much of the file they decode.
TEST(JpegRegionTest, TransformedSamplesEqualTheWholeImagePath) {
  const std::string jpeg = write_jpeg(pixels(300, 280, 3, 9), 300, 280, 3);
  const Image whole = decode_bytes(jpeg, "whole.jpg", 1);
  for (Augment mode : {Augment::kTrain, Augment::kEval}) {
    ImageTransform t;
    t.mode = mode;
    t.size = mode == Augment::kTrain ? 224 : 200;
    t.resize = 230;
    for (uint64_t seed = 0; seed < 8; ++seed) {
      std::mt19937_64 rng_a(seed), rng_b(seed);
      const torch::Tensor want = apply_transform(whole, t, rng_a);
      torch::Tensor got = torch::empty({3, t.size, t.size});
      EXPECT_EQ(decode_and_transform(jpeg, "x.jpg", t, DecodeOptions{}, rng_b, got.data_ptr<float>()), 1);
      EXPECT_TRUE(torch::equal(got, want)) << (mode == Augment::kTrain ? "train" : "eval") << ", seed " << seed;
    }
  }
}

TEST(JpegRegionTest, CmykIsLeftToTheWholeImageDecoder) {
  const std::string jpeg = write_jpeg(pixels(64, 80, 4, 2), 64, 80, 4);
  ImageRegion r;
  EXPECT_FALSE(decode_jpeg_region(jpeg, "cmyk.jpg", 1, 0, 0, 64, 80, &r));
  ImageTransform t;
  t.size = 32;
  std::vector<float> out(3 * 32 * 32, -100.0f);
  std::mt19937_64 rng(1);
  decode_and_transform(jpeg, "cmyk.jpg", t, DecodeOptions{}, rng, out.data());
  EXPECT_GT(*std::min_element(out.begin(), out.end()), -3.0f) << "every output pixel written";
}

TEST(JpegRegionTest, BadFilesAndRectanglesAreNamedErrors) {
  const std::string jpeg = write_jpeg(pixels(120, 160, 3, 4), 120, 160, 3);
  ImageRegion r;
  auto error_of = [&](const std::string& bytes, int reduce, int top, int left, int h, int w) {
    try {
      decode_jpeg_region(bytes, "bad.jpg", reduce, top, left, h, w, &r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(jpeg, 2, 50, 0, 11, 10).find("bad.jpg: the crop 11x10 at (50, 0) lies outside the 60x80 pixels decoded at 1/2 scale"),
            std::string::npos);
  EXPECT_NE(error_of(jpeg, 1, 0, -1, 10, 10).find("lies outside"), std::string::npos);
  const std::string garbage = std::string("\xff\xd8\xff\xe0", 4) + "not a jpeg at all";
  EXPECT_EQ(error_of(garbage, 1, 0, 0, 1, 1).rfind("bad.jpg: cannot decode JPEG (", 0), 0u);
  // A file cut in half: libjpeg pads the missing data (a warning, as OpenCV also accepts), or
  // stops with an error; never a crash or a hang.
  const std::string cut = jpeg.substr(0, jpeg.size() / 2);
  const std::string e = error_of(cut, 1, 0, 0, 120, 160);
  EXPECT_TRUE(e.empty() || e.rfind("bad.jpg: ", 0) == 0) << e;
  for (size_t n : {size_t{2}, size_t{20}, size_t{200}}) {
    const std::string m = error_of(jpeg.substr(0, n), 1, 0, 0, 120, 160);
    EXPECT_EQ(m.rfind("bad.jpg: ", 0), 0u) << n << " bytes: " << m;
  }
}

}  // namespace
}  // namespace ctrain::data
