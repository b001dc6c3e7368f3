// The GPU image pipeline: refused with its reason where it cannot run (every build), and on a
// GPU (the node run, scripts/node-check.sh; skipped elsewhere) its kernel equal to the host
// arithmetic bit for bit, and every kind of JPEG decoded or named.
#include "data/gpu_image_folder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "../support/fixtures.h"
#include "core/error.h"
#include "core/fs.h"
#include "data/decode.h"
#include "data/gpu_plan.h"

#ifdef CTRAIN_TESTS_HAVE_GPU_PIPELINE
#include <c10/cuda/CUDAStream.h>

#include "data/augment_cuda.h"
#include "data/nvjpeg_decoder.h"
#endif

namespace ctrain::data {
namespace {

namespace fs = std::filesystem;

TEST(GpuPipelineTest, RefusedWithItsReasonOffCuda) {
  const std::string why = gpu_pipeline_unavailable(torch::Device(torch::kCPU));
  EXPECT_FALSE(why.empty());
  ImageFolderIndex idx;
  idx.root = "/nonexistent";
  idx.classes = {"a"};
  idx.samples = {{"/nonexistent/a/1.jpg", 0}};
  try {
    GpuImageFolderSource src(idx, ImageTransform{}, ShardSampler(1, 0, 1, 1, false), LoaderOptions{}, {},
                             torch::Device(torch::kCPU));
    FAIL() << "a GPU pipeline on the CPU was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--decode gpu: ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

#ifdef CTRAIN_TESTS_HAVE_GPU_PIPELINE

#define SKIP_WITHOUT_GPU()                                                           \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";           \
  if (const std::string why = gpu_pipeline_unavailable(torch::Device(torch::kCUDA, 0)); !why.empty()) \
    GTEST_SKIP() << why;

// Random RGB pixels, and a sample planned on them as the pipeline would.
struct HostSample {
  std::vector<uint8_t> pixels;
  augment::Sample desc;
};

HostSample random_sample(int h, int w, const ImageTransform& t, std::mt19937_64& rng) {
  HostSample s;
  s.pixels.resize(static_cast<size_t>(h) * w * 3);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& v : s.pixels) v = static_cast<uint8_t>(byte(rng));
  s.desc = describe_sample(plan_sample(h, w, t, rng), t, h, w);
  return s;
}

TEST(AugmentKernelCudaTest, EqualsTheHostArithmeticBitForBit) {
  SKIP_WITHOUT_GPU();
  const torch::Device cuda(torch::kCUDA, 0);
  std::mt19937_64 rng(11);
  for (const Augment mode : {Augment::kTrain, Augment::kEval}) {
    ImageTransform t;
    t.mode = mode;
    t.size = 96;
    t.resize = 110;
    const std::vector<std::pair<int, int>> sizes = {{480, 640}, {100, 80}, {96, 96}, {333, 517}, {768, 1024}};
    std::vector<HostSample> host;
    std::vector<torch::Tensor> dev;  // each sample's whole image on the device
    std::vector<augment::Sample> descs;
    for (const auto& [h, w] : sizes) {
      host.push_back(random_sample(h, w, t, rng));
      dev.push_back(torch::from_blob(host.back().pixels.data(), {int64_t(host.back().pixels.size())}, torch::kUInt8).to(cuda));
      augment::Sample d = host.back().desc;
      attach_pixels(&d, {0, 0, h, w}, dev.back().data_ptr<uint8_t>(), int64_t{w} * 3);
      descs.push_back(d);
    }
    const int n = static_cast<int>(descs.size()), s = t.size;
    torch::Tensor desc_dev = torch::from_blob(descs.data(), {int64_t(n * sizeof(augment::Sample))}, torch::kUInt8).to(cuda);
    const augment::Normalize norm = normalize_of(t);
    torch::Tensor want = torch::empty({n, 3, s, s}, torch::kFloat32);
    for (int i = 0; i < n; ++i) {
      augment::Sample d = host[i].desc;
      attach_pixels(&d, {0, 0, sizes[i].first, sizes[i].second}, host[i].pixels.data(), int64_t{sizes[i].second} * 3);
      render_on_host(d, norm, s, want[i].data_ptr<float>());
    }
    const auto* descs_ptr = reinterpret_cast<const augment::Sample*>(desc_dev.data_ptr<uint8_t>());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    torch::Tensor nchw = torch::empty({n, 3, s, s}, torch::TensorOptions().device(cuda));
    ASSERT_EQ(launch_augment(descs_ptr, n, s, norm, BatchLayout::kNCHW, BatchDtype::kFloat32, nchw.data_ptr(), stream),
              cudaSuccess);
    torch::Tensor nhwc = torch::empty({n, 3, s, s}, torch::TensorOptions().device(cuda), at::MemoryFormat::ChannelsLast);
    ASSERT_EQ(launch_augment(descs_ptr, n, s, norm, BatchLayout::kNHWC, BatchDtype::kFloat32, nhwc.data_ptr(), stream),
              cudaSuccess);
    torch::Tensor bf16 = torch::empty({n, 3, s, s}, torch::TensorOptions().device(cuda).dtype(torch::kBFloat16));
    ASSERT_EQ(launch_augment(descs_ptr, n, s, norm, BatchLayout::kNCHW, BatchDtype::kBFloat16, bf16.data_ptr(), stream),
              cudaSuccess);
    EXPECT_TRUE(torch::equal(nchw.cpu(), want)) << "max diff " << (nchw.cpu() - want).abs().max().item<float>();
    EXPECT_TRUE(torch::equal(nhwc.cpu().contiguous(), want));
    EXPECT_TRUE(torch::equal(bf16.cpu(), want.to(torch::kBFloat16)));
  }
}

// Writes the JPEG kinds the pipeline must handle with PIL (the node has no C++ JPEG writer).
void write_jpeg_kinds(const std::string& py, const std::string& dir) {
  const std::string script = R"PY(
import sys, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(3)
y, x = np.mgrid[0:480, 0:640]
base = np.stack([128 + 100*np.sin(x/37.0), 128 + 90*np.cos(y/23.0), 128 + 60*np.sin((x+y)/51.0)], -1)
img = Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))
img.save(d + "/a_baseline420.jpg", quality=90)
img.save(d + "/b_progressive.jpg", quality=90, progressive=True)
img.convert("L").save(d + "/c_gray.jpg", quality=90)
img.convert("CMYK").save(d + "/d_cmyk.jpg", quality=90)
img.save(d + "/e_444.jpg", quality=90, subsampling=0)
img.resize((200, 150)).save(d + "/f_small.jpg", quality=85)
good = open(d + "/a_baseline420.jpg", "rb").read()
open(d + "/x_truncated.jpg", "wb").write(good[: len(good) // 2])
open(d + "/y_corrupt.jpg", "wb").write(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
)PY";
  write_file_atomic(dir + "/gen.py", script);
  const auto r = ctrain::testing::run_command(py + " " + dir + "/gen.py " + dir + "/train/birds");
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// Decodes a whole JPEG file with nvJPEG into `out` (device); the decoder's result.
JpegResult decode_whole(NvjpegDecoder& dec, const std::string& path, torch::Tensor* out, int* h, int* w) {
  const std::string bytes = read_file(path);
  if (!jpeg_size(bytes, h, w)) return {JpegOutcome::kCorrupt, "no JPEG header", false};
  *out = torch::empty({int64_t{*h} * *w * 3}, torch::TensorOptions().dtype(torch::kUInt8).device(torch::kCUDA));
  JpegRegion r;
  r.data = reinterpret_cast<const unsigned char*>(bytes.data());
  r.size = bytes.size();
  r.height = *h;
  r.width = *w;
  r.dst = out->data_ptr<uint8_t>();
  r.pitch = static_cast<size_t>(*w) * 3;
  const auto res = dec.decode({r}, c10::cuda::getCurrentCUDAStream().stream());
  c10::cuda::getCurrentCUDAStream().synchronize();
  return res[0];
}

// The good files of the folder this nvJPEG refuses whole (printed): with no CPU decoder (the
// node has no OpenCV) they are bad images too, as documented.
std::set<std::string> refused_by_nvjpeg(const ImageFolderIndex& index) {
  NvjpegDecoder probe(1);
  std::set<std::string> refused;
  for (const auto& [path, cls] : index.samples) {
    const std::string name = fs::path(path).filename().string();
    if (name[0] == 'x' || name[0] == 'y') continue;  // the truncated and the corrupt one
    torch::Tensor img;
    int h = 0, w = 0;
    const JpegResult res = decode_whole(probe, path, &img, &h, &w);
    if (res.outcome != JpegOutcome::kDecoded) {
      refused.insert(name);
      std::printf("nvJPEG refuses %s: %s\n", name.c_str(), res.reason.c_str());
    }
  }
  return refused;
}

bool have_cpu_decoder() {
  try {
    decode_bytes("not an image", "probe");
  } catch (const Error& e) {
    return std::string(e.what()).find("without an image decoder") == std::string::npos;
  }
  return true;
}

TEST(GpuPipelineCudaTest, EveryKindOfJpegIsDecodedOrNamed) {
  SKIP_WITHOUT_GPU();
  CTRAIN_PYTHON_OR_SKIP(py, "PIL, numpy", "pillow and numpy");
  ctrain::testing::TempDir dir;
  fs::create_directories(dir / "train/birds");
  write_jpeg_kinds(py, dir.path().string());
  fs::remove(dir / "train/birds/gen.py");
  const torch::Device cuda(torch::kCUDA, 0);
  ImageTransform t;
  t.size = 64;
  LoaderOptions lo;
  lo.batch_size = 16;
  lo.workers = 2;
  lo.skip_bad_images = true;
  auto index = index_image_folder(dir / "train");
  ASSERT_EQ(index.samples.size(), 8u);
  const std::set<std::string> refused = have_cpu_decoder() ? std::set<std::string>{} : refused_by_nvjpeg(index);
  const int64_t expect_bad = 2 + static_cast<int64_t>(refused.size());
  {
    GpuImageFolderSource src(index, t, ShardSampler(8, 0, 1, 5, false), lo, {}, cuda);
    src.start_epoch(0);
    auto b = src.next();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(b->input.is_cuda());
    EXPECT_EQ(b->input.size(0), 8 - expect_bad);  // the truncated and the corrupt file skipped
    EXPECT_TRUE(torch::isfinite(b->input).all().item<bool>());
    EXPECT_FALSE(src.next().has_value());
    const auto c = src.counts();
    EXPECT_EQ(c.bad, expect_bad);
    EXPECT_EQ(c.hardware + c.cuda + c.cpu, 8 - expect_bad);
    if (src.hardware_decoder()) EXPECT_GT(c.hardware, 0) << "the JPEG engine took no region";
    std::printf("decoded: %lld by the JPEG engine, %lld by CUDA, %lld on the CPU (engine: %s)\n",
                static_cast<long long>(c.hardware), static_cast<long long>(c.cuda), static_cast<long long>(c.cpu),
                src.hardware_decoder() ? "yes" : "no");
  }
  lo.skip_bad_images = false;
  GpuImageFolderSource strict(index, t, ShardSampler(8, 0, 1, 5, false), lo, {}, cuda);
  strict.start_epoch(0);
  try {
    strict.next();
    FAIL() << "a truncated and a corrupt file passed";
  } catch (const Error& e) {
    const std::string what = e.what();
    bool named = what.find("x_truncated.jpg") != std::string::npos || what.find("y_corrupt.jpg") != std::string::npos;
    for (const auto& f : refused) named = named || what.find(f) != std::string::npos;
    EXPECT_TRUE(named) << what;
  }
}

// The pipeline's output (region decode, kernel) against the host arithmetic on a whole-image
// nvJPEG decode of the same file: the same crops; pixels equal up to the decoder's own
// differences between a region and a whole decode (measured and printed).
TEST(GpuPipelineCudaTest, RegionDecodeAndKernelMatchTheHostArithmetic) {
  SKIP_WITHOUT_GPU();
  CTRAIN_PYTHON_OR_SKIP(py, "PIL, numpy", "pillow and numpy");
  ctrain::testing::TempDir dir;
  fs::create_directories(dir / "train/birds");
  write_jpeg_kinds(py, dir.path().string());
  for (const char* f : {"gen.py", "x_truncated.jpg", "y_corrupt.jpg"}) fs::remove(fs::path(dir / "train/birds") / f);
  for (const auto& f : refused_by_nvjpeg(index_image_folder(dir / "train"))) fs::remove(fs::path(dir / "train/birds") / f);
  const torch::Device cuda(torch::kCUDA, 0);
  const auto index = index_image_folder(dir / "train");
  const int64_t n = static_cast<int64_t>(index.samples.size());
  for (const Augment mode : {Augment::kTrain, Augment::kEval}) {
    ImageTransform t;
    t.mode = mode;
    t.size = 112;
    t.resize = 128;
    LoaderOptions lo;
    lo.batch_size = n;
    lo.workers = 1;
    lo.seed = 9;
    GpuImageFolderSource src(index, t, ShardSampler(n, 0, 1, 9, false), lo, {}, cuda);
    src.start_epoch(2);
    const torch::Tensor got = src.next()->input.cpu();
    NvjpegDecoder whole(1);
    double worst = 0, mean = 0;
    for (int64_t i = 0; i < n; ++i) {
      torch::Tensor img;
      int h = 0, w = 0;
      const JpegResult res = decode_whole(whole, index.samples[i].first, &img, &h, &w);
      EXPECT_EQ(res.outcome, JpegOutcome::kDecoded) << index.samples[i].first << ": " << res.reason;
      if (res.outcome != JpegOutcome::kDecoded) continue;
      const torch::Tensor host_img = img.cpu();
      std::mt19937_64 rng = sample_rng(9, 2, i);
      augment::Sample d = describe_sample(plan_sample(h, w, t, rng), t, h, w);
      attach_pixels(&d, {0, 0, h, w}, host_img.data_ptr<uint8_t>(), int64_t{w} * 3);
      torch::Tensor want = torch::empty({3, t.size, t.size});
      render_on_host(d, normalize_of(t), t.size, want.data_ptr<float>());
      const torch::Tensor diff = (got[i] - want).abs();
      worst = std::max(worst, diff.max().item<double>());
      mean += diff.mean().item<double>() / n;
      std::printf("%s %s: max |diff| %.4f, mean %.5f\n", mode == Augment::kTrain ? "train" : "eval",
                  fs::path(index.samples[i].first).filename().c_str(), diff.max().item<double>(),
                  diff.mean().item<double>());
    }
    // One 8-bit level is 1/255/std ~ 0.0175 in normalized units. A region decode may differ
    // from a whole one at the region's edges (chroma upsampling across the border).
    EXPECT_LT(mean, 0.01);
    EXPECT_LT(worst, 0.25);
  }
}

#endif  // CTRAIN_TESTS_HAVE_GPU_PIPELINE

}  // namespace
}  // namespace ctrain::data
