#include "data/image_folder.h"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <fstream>

#include "../support/fixtures.h"
#include "../support/images.h"
#include "core/error.h"
#include "core/fs.h"

namespace ctrain::data {
namespace {

using ctrain::testing::TempDir;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ctrain::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ImageFolderTest, IndexSortsClassesAndFilesLikeTorchvision) {
  TempDir dir;
  ctrain::testing::write_image_folder(dir / "t", {"turkey", "chicken"}, 4, 1);
  std::filesystem::create_directories(dir / "t/chicken/nested");
  cv::imwrite(dir / "t/chicken/nested/x.JPG", cv::Mat(8, 8, CV_8UC3, cv::Scalar(1, 2, 3)));
  std::ofstream(dir / "t/chicken/notes.txt") << "not an image";
  const auto idx = index_image_folder(dir / "t");
  EXPECT_EQ(idx.classes, (std::vector<std::string>{"chicken", "turkey"}));
  ASSERT_EQ(idx.samples.size(), 9u);
  EXPECT_NE(idx.samples[0].first.find("chicken/0.jpg"), std::string::npos);
  EXPECT_NE(idx.samples[4].first.find("chicken/nested/x.JPG"), std::string::npos);
  EXPECT_EQ(idx.samples[4].second, 0);
  EXPECT_EQ(idx.samples[5].second, 1);
}

TEST(ImageFolderTest, ClearErrors) {
  TempDir dir;
  EXPECT_NE(error_of([&] { index_image_folder(dir / "none"); }).find(dir / "none"), std::string::npos);
  std::filesystem::create_directories(dir / "empty_root");
  EXPECT_NE(error_of([&] { index_image_folder(dir / "empty_root"); }).find("no class folders"), std::string::npos);
  ctrain::testing::write_image_folder(dir / "a", {"chicken"}, 2, 1);
  std::filesystem::create_directories(dir / "a/turkey");
  EXPECT_NE(error_of([&] { index_image_folder(dir / "a"); }).find("a/turkey has no images"), std::string::npos);
  ctrain::testing::write_image_folder(dir / "train", {"chicken", "turkey"}, 2, 1);
  ctrain::testing::write_image_folder(dir / "val", {"chicken", "duck", "turkey"}, 2, 1);
  const std::string e = error_of([&] {
    check_val_classes(index_image_folder(dir / "train"), index_image_folder(dir / "val"));
  });
  EXPECT_NE(e.find("duck"), std::string::npos) << e;
}

TEST(TransformTest, RandomResizedCropBoxesFollowTorchvisionRules) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const int h = 50 + i % 300, w = 60 + (i * 7) % 400;
    const CropBox b = random_resized_crop_box(h, w, rng);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, h);
    ASSERT_LE(b.left + b.width, w);
    const double frac = static_cast<double>(b.height) * b.width / (static_cast<double>(h) * w);
    const double ratio = static_cast<double>(b.width) / b.height;
    // Rounding to whole pixels widens the bounds a little.
    EXPECT_GE(frac, 0.06) << h << "x" << w;
    EXPECT_GE(ratio, 0.7);
    EXPECT_LE(ratio, 1.43);
  }
  // 10x1000 can never fit the sampled boxes: torchvision's fallback is the central crop with
  // the ratio clamped to 4/3: height 10, width round(13.33) = 13, left (1000-13)//2 = 493.
  const CropBox f = random_resized_crop_box(10, 1000, rng);
  EXPECT_EQ(f.top, 0);
  EXPECT_EQ(f.height, 10);
  EXPECT_EQ(f.width, 13);
  EXPECT_EQ(f.left, 493);
}

TEST(TransformTest, ResizeAndCenterCropKnownValues) {
  // torchvision.transforms.Resize(256) on 640x480 (w x h) gives 341x256 (int truncation),
  // CenterCrop(224) then starts at round((341-224)/2) = round(58.5) = 58 (ties to even).
  EXPECT_EQ(resize_shorter_side(480, 640, 256), std::make_pair(256, 341));
  EXPECT_EQ(resize_shorter_side(640, 480, 256), std::make_pair(341, 256));
  EXPECT_EQ(resize_shorter_side(300, 300, 256), std::make_pair(256, 256));
  const CropBox b = center_crop_box(256, 341, 224);
  EXPECT_EQ(b.top, 16);
  EXPECT_EQ(b.left, 58);
  EXPECT_EQ(b.height, 224);
  EXPECT_THROW(center_crop_box(100, 300, 224), ctrain::Error);
}

TEST(TransformTest, NormalisesWithImageNetStatistics) {
  Image img;
  img.height = 90;
  img.width = 70;
  img.rgb.resize(90 * 70 * 3);
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = 200;
    img.rgb[i + 1] = 100;
    img.rgb[i + 2] = 20;
  }
  for (Augment mode : {Augment::kTrain, Augment::kEval}) {
    ImageTransform t;
    t.mode = mode;
    t.size = 32;
    t.resize = 36;
    std::mt19937_64 rng(1);
    const torch::Tensor out = apply_transform(img, t, rng);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 32, 32}));
    const float expect[3] = {(200 / 255.f - 0.485f) / 0.229f, (100 / 255.f - 0.456f) / 0.224f,
                             (20 / 255.f - 0.406f) / 0.225f};
    for (int c = 0; c < 3; ++c) {
      EXPECT_NEAR(out[c].min().item<float>(), expect[c], 1e-4);
      EXPECT_NEAR(out[c].max().item<float>(), expect[c], 1e-4);
    }
  }
}

TEST(TransformTest, DecodesGrayscaleAndAlphaAsRgb) {
  TempDir dir;
  cv::imwrite(dir / "g.png", cv::Mat(10, 12, CV_8UC1, cv::Scalar(77)));
  cv::imwrite(dir / "a.png", cv::Mat(10, 12, CV_8UC4, cv::Scalar(10, 20, 30, 128)));
  const Image g = decode_image(dir / "g.png");
  EXPECT_EQ(g.rgb.size(), 10u * 12 * 3);
  EXPECT_EQ(g.rgb[0], 77);
  EXPECT_EQ(g.rgb[2], 77);
  const Image a = decode_image(dir / "a.png");
  EXPECT_EQ(a.rgb.size(), 10u * 12 * 3);
  EXPECT_EQ(a.rgb[0], 30);  // BGR(A) on disk -> RGB in memory
  EXPECT_EQ(a.rgb[2], 10);
}

std::vector<Batch> epoch_batches(const ImageFolderIndex& idx, int workers, int64_t epoch, bool skip = false) {
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = workers;
  o.prefetch_batches = 2;
  o.skip_bad_images = skip;
  o.seed = 9;
  ImageTransform t;
  t.size = 32;
  ImageFolderSource src(idx, t, ShardSampler(static_cast<int64_t>(idx.samples.size()), 0, 1, 9, true), o);
  std::vector<Batch> out;
  src.start_epoch(epoch);
  while (auto b = src.next()) out.push_back(*b);
  return out;
}

TEST(LoaderTest, SameBatchesWhateverTheWorkerCount) {
  TempDir dir;
  ctrain::testing::write_image_folder(dir / "t", {"a", "b"}, 11, 2);
  const auto idx = index_image_folder(dir / "t");
  const auto ref = epoch_batches(idx, 0, 1);
  ASSERT_EQ(ref.size(), 5u);  // 22 images / 5
  EXPECT_EQ(ref.back().input.size(0), 2);
  for (int workers : {1, 3}) {
    const auto got = epoch_batches(idx, workers, 1);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_TRUE(torch::equal(got[i].input, ref[i].input)) << workers << " workers, batch " << i;
      EXPECT_TRUE(torch::equal(got[i].target, ref[i].target));
    }
  }
  const auto other = epoch_batches(idx, 2, 2);
  EXPECT_FALSE(torch::equal(other[0].input, ref[0].input)) << "epochs must differ";
}

TEST(LoaderTest, BadImageNamedOrSkipped) {
  TempDir dir;
  ctrain::testing::write_image_folder(dir / "t", {"a", "b"}, 4, 3);
  std::ofstream(dir / "t/a/broken.jpg") << "\xff\xd8\xff\xe0 this is not really a jpeg";
  const auto idx = index_image_folder(dir / "t");
  const std::string e = error_of([&] { epoch_batches(idx, 2, 0); });
  EXPECT_NE(e.find("broken.jpg"), std::string::npos) << e;
  LoaderOptions o;
  o.batch_size = 3;
  o.skip_bad_images = true;
  ImageTransform t;
  t.size = 32;
  ImageFolderSource src(idx, t, ShardSampler(9, 0, 1, 1, false), o);
  ::testing::internal::CaptureStderr();
  int64_t seen = 0;
  for (int64_t epoch : {0, 1}) {
    src.start_epoch(epoch);
    while (auto b = src.next()) seen += b->input.size(0);
  }
  const std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(seen, 16);
  EXPECT_EQ(src.bad_images(), 2);  // counted each epoch
  // ... and named once, with why, as it is skipped.
  const std::string line = "skipped (--skip-bad-images): " + (dir / "t/a/broken.jpg") + ": ";
  ASSERT_NE(said.find(line), std::string::npos) << said;
  EXPECT_EQ(said.find(line, said.find(line) + 1), std::string::npos) << said;
  EXPECT_EQ(said.find("hint:"), std::string::npos) << said;
}

// Past SkippedImages::kNamed files, one line says the rest are counted only.
TEST(LoaderTest, SkippedImagesNamesTheFirstFewOnce) {
  SkippedImages s;
  ::testing::internal::CaptureStderr();
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < SkippedImages::kNamed + 5; ++i) s.note("img" + std::to_string(i) + ".jpg: bad\n  hint: skip");
  }
  const std::string said = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (char c : said) lines += c == '\n';
  EXPECT_EQ(lines, SkippedImages::kNamed + 1) << said;
  EXPECT_NE(said.find("skipped (--skip-bad-images): img0.jpg: bad\n"), std::string::npos) << said;
  EXPECT_NE(said.find("counted, not named"), std::string::npos) << said;
}

}  // namespace
}  // namespace ctrain::data

namespace ctrain::data {
namespace {

TEST(ReducedDecodeTest, JpegSizeFromHeaderAndCloseToFullDecode) {
  TempDir dir;
  // A large photo-like JPEG: smooth gradients plus noise.
  cv::Mat img(900, 1200, CV_8UC3);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(40));
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) img.at<cv::Vec3b>(y, x) += cv::Vec3b(x / 6, y / 5, (x + y) / 12);
  }
  std::filesystem::create_directories(dir / "t/a");
  cv::imwrite(dir / "t/a/big.jpg", img);
  int h = 0, w = 0;
  ASSERT_TRUE(jpeg_size(ctrain::read_file(dir / "t/a/big.jpg"), &h, &w));
  EXPECT_EQ(h, 900);
  EXPECT_EQ(w, 1200);
  EXPECT_FALSE(jpeg_size("\x89PNG not a jpeg", &h, &w));
  EXPECT_FALSE(jpeg_size(std::string("\xff\xd8\xff\xc0\x00", 5), &h, &w));  // truncated SOF
  // Stray bytes before a marker, which libjpeg skips with a warning and decodes: the walk skips
  // them too, so the pixel limit sees the real size (a fuzzer found a 23320x27432 frame so).
  {
    std::string bytes = ctrain::read_file(dir / "t/a/big.jpg");
    const size_t app0_end = 4 + ((static_cast<unsigned char>(bytes[4]) << 8) | static_cast<unsigned char>(bytes[5]));
    bytes.insert(app0_end, "\x01\x00\x00", 3);
    ASSERT_TRUE(jpeg_size(bytes, &h, &w));
    EXPECT_EQ(h, 900);
    EXPECT_EQ(w, 1200);
    // What else libjpeg reads past on its way to the frame: TEM and RSTn (no length), FF 00
    // (garbage), fill bytes, and a COM whose length word is below 2 (nothing skipped). A
    // fuzzer found a TEM marker hiding a 23320x27432 frame from a walk that read a length after it.
    bytes.insert(app0_end, std::string("\xff\x01\xff\xd3\xff\x00\xff\xff\xff\xfe\x00\x01", 12));
    ASSERT_TRUE(jpeg_size(bytes, &h, &w));
    EXPECT_EQ(h, 900);
    EXPECT_EQ(w, 1200);
    // Where libjpeg stops before the frame, no decoder allocates it, and the walk says so.
    for (const char* stop : {"\xff\xd8", "\xff\xd9", "\xff\xda", "\xff\x02", "\xff\xde"}) {
      std::string cut = bytes;
      cut.insert(app0_end, stop, 2);
      EXPECT_FALSE(jpeg_size(cut, &h, &w)) << "marker " << static_cast<int>(static_cast<unsigned char>(stop[1]));
    }
    ImageTransform t;
    DecodeOptions d;
    d.max_image_pixels = 1000;
    std::mt19937_64 rng(0);
    std::vector<float> out(3 * t.size * t.size);
    try {
      decode_and_transform(bytes, "stray.jpg", t, d, rng, out.data());
      ADD_FAILURE() << "a 900x1200 JPEG with stray bytes passed --max-image-pixels 1000";
    } catch (const ctrain::Error& e) {
      EXPECT_NE(std::string(e.what()).find("above --max-image-pixels"), std::string::npos) << e.what();
    }
  }

  const auto idx = index_image_folder(dir / "t");
  for (Augment mode : {Augment::kTrain, Augment::kEval}) {
    ImageTransform t;
    t.mode = mode;
    t.size = 64;
    t.resize = 73;
    // The first sample's pixels and how many images were decoded at a reduced scale.
    auto render_with = [&](bool reduced) {
      LoaderOptions o;
      o.batch_size = 1;
      o.workers = 0;
      o.reduced_decode = reduced;
      ImageFolderSource src(idx, t, ShardSampler(1, 0, 1, 5, false), o);
      src.start_epoch(3);
      torch::Tensor input = src.next()->input;
      return std::make_pair(input, src.reduced_decodes());
    };
    const auto [full, full_count] = render_with(false);
    const auto [reduced, reduced_count] = render_with(true);
    const char* name = mode == Augment::kTrain ? "train" : "eval";
    EXPECT_EQ(full_count, 0) << name;
    // A 900x1200 photo into 64 pixels: a reduction above 1 must have been chosen and used
    // (a silent fall-back to a full decode would give the full decode's exact pixels).
    EXPECT_EQ(reduced_count, 1) << name;
    EXPECT_FALSE(torch::equal(full, reduced)) << name;
    // Same crop geometry, slightly different resampling: close on average, not equal.
    const double mean_diff = (full - reduced).abs().mean().item<double>();
    EXPECT_LT(mean_diff, 0.1) << (mode == Augment::kTrain ? "train" : "eval");
    EXPECT_GT(full.std().item<double>(), 0.1);  // the image has content to compare
  }
}

}  // namespace
}  // namespace ctrain::data

namespace ctrain::data {
namespace {

// Phone photos carry an EXIF orientation. torchvision's PIL path ignores it, and so must the
// loader: the crop is planned from the header's stored size. Every orientation, portrait and
// landscape, train and eval, reduced and full decode: the same pixels as the file without EXIF.
TEST(ExifOrientationTest, IgnoredLikePilInEveryMode) {
  TempDir dir;
  for (auto [h, w] : {std::pair<int, int>{300, 120}, {120, 300}}) {
    cv::Mat img(h, w, CV_8UC3);
    cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
    std::vector<uchar> buf;
    cv::imencode(".jpg", img, buf);
    const std::string plain(buf.begin(), buf.end());
    const std::string tag = std::to_string(h) + "x" + std::to_string(w);
    std::filesystem::create_directories(dir / ("plain" + tag + "/a"));
    ctrain::write_file_atomic(dir / ("plain" + tag + "/a/0.jpg"), plain);
    for (int orientation = 1; orientation <= 8; ++orientation) {
      const std::string rotated = ctrain::testing::with_exif_orientation(plain, orientation);
      if (orientation >= 5) {  // the fixture is real: a decoder that applies EXIF swaps the sides
        const cv::Mat applied = cv::imdecode(std::vector<uchar>(rotated.begin(), rotated.end()), cv::IMREAD_COLOR);
        ASSERT_EQ(applied.rows, w) << "orientation " << orientation;
      }
      const std::string folder = dir / ("exif" + tag + "_" + std::to_string(orientation));
      std::filesystem::create_directories(folder + "/a");
      ctrain::write_file_atomic(folder + "/a/0.jpg", rotated);
      const Image decoded = decode_image(folder + "/a/0.jpg");
      EXPECT_EQ(decoded.height, h) << "orientation " << orientation;
      EXPECT_EQ(decoded.width, w) << "orientation " << orientation;
      for (Augment mode : {Augment::kTrain, Augment::kEval}) {
        for (bool reduced : {false, true}) {
          ImageTransform t;
          t.mode = mode;
          t.size = 32;
          t.resize = 37;
          LoaderOptions o;
          o.batch_size = 1;
          o.workers = 0;
          o.reduced_decode = reduced;
          auto first = [&](const std::string& root) {
            ImageFolderSource src(index_image_folder(root), t, ShardSampler(1, 0, 1, 5, false), o);
            src.start_epoch(orientation);
            return src.next()->input;
          };
          EXPECT_TRUE(torch::equal(first(folder), first(dir / ("plain" + tag))))
              << tag << " orientation " << orientation << (mode == Augment::kTrain ? " train" : " eval")
              << (reduced ? " reduced" : " full");
        }
      }
    }
  }
}

TEST(DecodeAndTransformTest, PixelLimitRefusesByNameAndSkipCountsIt) {
  TempDir dir;
  ctrain::testing::write_image_folder(dir / "t", {"a"}, 3, 5);  // 48-120 pixels a side
  cv::imwrite(dir / "t/a/big.png", cv::Mat(300, 200, CV_8UC3, cv::Scalar(1, 2, 3)));
  cv::imwrite(dir / "t/a/bigger.jpg", cv::Mat(200, 400, CV_8UC3, cv::Scalar(1, 2, 3)));
  const auto idx = index_image_folder(dir / "t");
  ImageTransform t;
  t.size = 32;
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 0;
  o.max_image_pixels = 50000;
  {
    ImageFolderSource src(idx, t, ShardSampler(5, 0, 1, 1, false), o);
    src.start_epoch(0);
    const std::string e = error_of([&] { src.next(); });
    EXPECT_NE(e.find("big.png: 300x200 = 60000 pixels is above --max-image-pixels 50000"), std::string::npos) << e;
  }
  o.skip_bad_images = true;
  ImageFolderSource src(idx, t, ShardSampler(5, 0, 1, 1, false), o);
  src.start_epoch(0);
  EXPECT_EQ(src.next()->input.size(0), 3);
  EXPECT_EQ(src.bad_images(), 2);
  // Eval: an extreme aspect ratio whose Resize(256) would need 256 x 128000 pixels.
  std::vector<uchar> buf;
  cv::imencode(".jpg", cv::Mat(4, 2000, CV_8UC3, cv::Scalar(9, 9, 9)), buf);
  ImageTransform ev;
  ev.mode = Augment::kEval;
  std::vector<float> out(3 * 224 * 224);
  std::mt19937_64 rng(1);
  DecodeOptions d;
  d.max_image_pixels = 1000000;
  const std::string e = error_of([&] {
    decode_and_transform(std::string(buf.begin(), buf.end()), "strip.jpg", ev, d, rng, out.data());
  });
  EXPECT_NE(e.find("strip.jpg: 256x128000"), std::string::npos) << e;
}

// Whatever fails inside the decoder (OpenCV's own exceptions and limits included) arrives as
// a ctrain::Error naming the file, so --skip-bad-images can skip it.
TEST(DecodeAndTransformTest, AnyDecoderFailureIsABadImage) {
  // A PNG header that claims 60000 x 60000 pixels, then nothing.
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\xea\x60\0\0\xea\x60\x08\x02\0\0\0", 29);
  int h = 0, w = 0;
  ASSERT_TRUE(png_size(png, &h, &w));
  EXPECT_EQ(h, 60000);
  ImageTransform t;
  t.size = 32;
  std::vector<float> out(3 * 32 * 32);
  std::mt19937_64 rng(1);
  DecodeOptions d;
  d.max_image_pixels = 0;  // no limit of ours: the decoder's own failure must still be named
  const std::string e = error_of([&] { decode_and_transform(png, "huge.png", t, d, rng, out.data()); });
  EXPECT_EQ(e.rfind("huge.png", 0), 0u) << e;
  d.max_image_pixels = kDefaultMaxImagePixels;
  const std::string limited = error_of([&] { decode_and_transform(png, "huge.png", t, d, rng, out.data()); });
  EXPECT_NE(limited.find("huge.png: 60000x60000 = 3600000000 pixels is above --max-image-pixels"), std::string::npos)
      << limited;
}

// The formats an image folder holds (torchvision's IMG_EXTENSIONS) decode; what else OpenCV
// could decode is refused by name before it reaches OpenCV's decoder list, which holds GDCM
// (DICOM), JPEG 2000, OpenEXR and GDAL (fuzz_decode found a file that made GDCM abort).
TEST(DecodeAndTransformTest, DecodesTheImageFolderFormatsAndRefusesTheRest) {
  cv::Mat img(10, 12, CV_8UC3, cv::Scalar(40, 90, 200));  // BGR
  for (const char* ext : {".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tiff", ".webp"}) {
    if (!cv::haveImageWriter(ext)) continue;
    std::vector<uchar> buf;
    cv::Mat gray;
    cv::cvtColor(img, gray, cv::COLOR_BGR2GRAY);
    ASSERT_TRUE(cv::imencode(ext, std::string(ext) == ".pgm" ? gray : img, buf)) << ext;
    const std::string bytes(buf.begin(), buf.end());
    const Image d = decode_bytes(bytes, std::string("x") + ext);
    EXPECT_EQ(d.height, 10) << ext;
    EXPECT_EQ(d.width, 12) << ext;
    // The size --max-image-pixels judges before decoding, for the formats whose header is read.
    int h = 0, w = 0;
    const bool header = image_header_size(bytes, &h, &w);
    EXPECT_EQ(header, std::string(ext) != ".tiff" && std::string(ext) != ".webp") << ext;
    if (header) EXPECT_EQ(std::make_pair(h, w), std::make_pair(10, 12)) << ext;
  }
  // PNM as OpenCV reads it: comments and any whitespace between the numbers.
  const std::string pnm = "P6\n# made by hand\n  12\t# width\n10\n255\n" + std::string(10 * 12 * 3, '\x7f');
  EXPECT_EQ(decode_bytes(pnm, "c.ppm").width, 12);
  int ph = 0, pw = 0;
  ASSERT_TRUE(image_header_size(pnm, &ph, &pw));
  EXPECT_EQ(std::make_pair(ph, pw), std::make_pair(10, 12));
  // A BMP or PNM header claiming 60000x60000 and then nothing is judged by its header, before a
  // decoder allocates the 10.8 GB frame (after decoding, the error would be the decoder's).
  std::string bmp = "BM" + std::string(12, '\0') + std::string("\x28\0\0\0\x60\xea\0\0\xa0\x15\xff\xff", 12) +
                    std::string("\x01\0\x18\0", 4) + std::string(24, '\0');  // height -60000: top-down
  for (const auto& [name, bomb] : {std::make_pair(std::string("bomb.bmp"), bmp),
                                   std::make_pair(std::string("bomb.ppm"), std::string("P6 60000 60000 255\n"))}) {
    ImageTransform t;
    t.size = 32;
    std::vector<float> out(3 * 32 * 32);
    std::mt19937_64 rng(1);
    const std::string e = error_of([&] { decode_and_transform(bomb, name, t, DecodeOptions{}, rng, out.data()); });
    EXPECT_NE(e.find(name + ": 60000x60000 = 3600000000 pixels is above --max-image-pixels"), std::string::npos) << e;
  }
  std::vector<std::pair<std::string, std::string>> refused;
  // DICOM's signature sits at byte 128, after a preamble; here behind a stray JPEG-like start,
  // as the fuzzer had it, and behind a WebP header libwebp cannot read.
  refused.emplace_back("dicom.jpg", std::string("\xff\xd8\x1c", 3) + std::string(125, '\0') + "DICM" + std::string(64, '\x02'));
  refused.emplace_back("dicom.webp", "RIFF\x10\0\0\0WEBP" + std::string(116, '\0') + "DICM" + std::string(64, '\x02'));
  refused.emplace_back("radiance.png", "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n");
  if (cv::haveImageWriter(".jp2")) {
    std::vector<uchar> buf;
    const cv::Mat big(64, 64, CV_8UC3, cv::Scalar(40, 90, 200));  // OpenJPEG will not write 10x12
    if (cv::imencode(".jp2", big, buf)) refused.emplace_back("j2k.jpg", std::string(buf.begin(), buf.end()));
  }
  for (const auto& [name, bytes] : refused) {
    const std::string e = error_of([&] { decode_bytes(bytes, name); });
    EXPECT_NE(e.find(name + ": not a JPEG, PNG, BMP, PPM/PGM, TIFF or WebP image"), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace ctrain::data
