#include "data/idx.h"

#include <gtest/gtest.h>

#include "../support/fixtures.h"
#include "core/error.h"
#include "core/fs.h"

namespace ctrain::data {
namespace {

using ctrain::testing::idx_bytes;
using ctrain::testing::TempDir;
using ctrain::testing::write_bytes;

// Expects read_idx (or load_mnist) to throw a ctrain::Error whose message holds every needle.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    FAIL() << "expected ctrain::Error";
  } catch (const ctrain::Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
        << "message lacks '" << n << "': " << e.what();
  }
}

class IdxTest : public ::testing::TestWithParam<bool> {};  // param: gzipped

TEST_P(IdxTest, ReadsValidFile) {
  TempDir dir;
  const std::string p = dir / "a.idx";
  write_bytes(p, idx_bytes({2, 2, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255}), GetParam());
  const IdxArray a = read_idx(p, 3);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 2, 3}));
  ASSERT_EQ(a.bytes.size(), 12u);
  EXPECT_EQ(a.bytes[11], 255);
}

TEST_P(IdxTest, TruncatedPayloadNamesFile) {
  TempDir dir;
  const std::string p = dir / "short.idx";
  std::string bytes = idx_bytes({4, 2, 2}, std::vector<uint8_t>(16, 7));
  bytes.resize(bytes.size() - 3);
  write_bytes(p, bytes, GetParam());
  expect_error([&] { read_idx(p, 3); }, {p, "truncated", "16"});
}

TEST_P(IdxTest, TruncatedHeader) {
  TempDir dir;
  const std::string p = dir / "hdr.idx";
  write_bytes(p, std::string("\0\0\x08\x03\0\0", 6), GetParam());
  expect_error([&] { read_idx(p, 3); }, {p, "truncated"});
}

TEST_P(IdxTest, WrongMagic) {
  TempDir dir;
  const std::string p = dir / "magic.idx";
  write_bytes(p, "PK\x03\x04 this is a zip file", GetParam());
  expect_error([&] { read_idx(p, 3); }, {p, "magic"});
}

TEST_P(IdxTest, WrongRankSaysSwapped) {
  TempDir dir;
  const std::string p = dir / "labels.idx";
  write_bytes(p, idx_bytes({3}, {1, 2, 3}), GetParam());
  expect_error([&] { read_idx(p, 3); }, {p, "1 dimensions, expected 3"});
}

TEST_P(IdxTest, TrailingBytes) {
  TempDir dir;
  const std::string p = dir / "long.idx";
  write_bytes(p, idx_bytes({3}, {1, 2, 3}) + "xx", GetParam());
  expect_error([&] { read_idx(p, 1); }, {p, "trailing"});
}

TEST_P(IdxTest, HugeDimensionsRejectedBeforeAllocating) {
  TempDir dir;
  const std::string p = dir / "huge.idx";
  write_bytes(p, idx_bytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, {}), GetParam());
  expect_error([&] { read_idx(p, 3); }, {p, "too large"});
}

INSTANTIATE_TEST_SUITE_P(RawAndGzip, IdxTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "gz" : "raw"; });

TEST(IdxTest, CorruptGzipStream) {
  TempDir dir;
  const std::string p = dir / "bad.gz";
  write_bytes(p, idx_bytes({64}, std::vector<uint8_t>(64, 1)), true);
  std::string bytes = ctrain::read_file(p);
  bytes.resize(bytes.size() - 12);  // cut the deflate stream and its trailer
  write_bytes(p, bytes, false);
  expect_error([&] { read_idx(p, 1); }, {p});
}

TEST(MnistTest, LoadsGzippedAndScalesPixels) {
  TempDir dir;
  ctrain::testing::write_synthetic_mnist(dir / "d", 50, 20, /*gz=*/true);
  const MnistData d = load_mnist(dir / "d");
  EXPECT_EQ(d.train.images.sizes(), (std::vector<int64_t>{50, 784}));
  EXPECT_EQ(d.test.labels.sizes(), (std::vector<int64_t>{20}));
  EXPECT_EQ(d.train.images.dtype(), torch::kFloat32);
  EXPECT_EQ(d.train.labels.dtype(), torch::kInt64);
  EXPECT_LE(d.train.images.max().item<float>(), 1.0f);
  EXPECT_GE(d.train.images.min().item<float>(), 0.0f);
  EXPECT_GT(d.train.images.max().item<float>(), 0.5f);  // scaled by 1/255, not left as bytes
  EXPECT_LT(d.train.labels.max().item<int64_t>(), 10);
}

TEST(MnistTest, FindsRawFilesInASubfolder) {
  TempDir dir;
  ctrain::testing::write_synthetic_mnist(dir / "outer/inner", 30, 10, /*gz=*/false);
  const MnistData d = load_mnist(dir / "outer");
  EXPECT_EQ(d.train.images.size(0), 30);
  EXPECT_EQ(d.rows, 28);
}

TEST(MnistTest, CountMismatchNamesBothFiles) {
  TempDir dir;
  ctrain::testing::write_synthetic_mnist(dir.path().string(), 30, 10, false);
  write_bytes(dir / "train-labels-idx1-ubyte", idx_bytes({29}, std::vector<uint8_t>(29, 1)), false);
  expect_error([&] { load_mnist(dir.path().string()); },
               {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "30", "29"});
}

TEST(MnistTest, LabelOutOfRange) {
  TempDir dir;
  ctrain::testing::write_synthetic_mnist(dir.path().string(), 30, 10, false);
  std::vector<uint8_t> labels(10, 3);
  labels[7] = 12;
  write_bytes(dir / "t10k-labels-idx1-ubyte", idx_bytes({10}, labels), false);
  expect_error([&] { load_mnist(dir.path().string()); }, {"t10k-labels", "label 12", "index 7"});
}

TEST(MnistTest, MissingFolderAndFiles) {
  TempDir dir;
  expect_error([&] { load_mnist(dir / "nope"); }, {dir / "nope", "--data-folder"});
  expect_error([&] { load_mnist(dir.path().string()); }, {"train-images-idx3-ubyte"});
}

}  // namespace
}  // namespace ctrain::data
