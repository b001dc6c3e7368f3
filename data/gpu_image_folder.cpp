#include "data/gpu_image_folder.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/torch_error.h"
#include "data/augment_cuda.h"
#include "data/decode.h"
#include "data/gpu_plan.h"
#include "data/nvjpeg_decoder.h"
#include "data/nvjpeg_library.h"
#include "data/ordered_pool.h"

namespace ctrain::data {
namespace {

constexpr const char* kSkipHint = "use --skip-bad-images to skip it";

// One sample after the CPU stage: its bytes, its plan as the kernel's descriptor, and the
// region of the stored image to decode; or the reason it cannot be used.
struct Prepared {
  int64_t target = 0;
  const std::string* path = nullptr;
  std::string bytes;   // a JPEG for nvJPEG
  bool on_cpu = false;  // decoded on the CPU (not a JPEG): `decoded` holds the whole image
  Image decoded;
  int height = 0, width = 0;  // stored size
  augment::Sample desc;       // pixel fields set by the GPU stage
  Region region;
  std::string error;  // a per-sample failure, naming the file
};

using PreparedBatch = std::vector<Prepared>;

struct Ready {
  Batch batch;
  std::shared_ptr<at::cuda::CUDAEvent> done;
};

// The message of any exception, prefixed with the file's name when it does not start with it.
std::string naming(const std::string& path, const std::exception& e) {
  const std::string what = message_of(e);
  return what.rfind(path, 0) == 0 ? what : path + ": " + what;
}

void require_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace

void set_nvjpeg_library(const std::string& path) { nvjpeg::set_library_path(path); }

std::string gpu_pipeline_unavailable(const torch::Device& device) {
  if (!device.is_cuda()) return "the device is " + device.str() + ", not CUDA";
  if (const std::string why = nvjpeg_unavailable_reason(); !why.empty()) return why;
  return "";
}

struct GpuImageFolderSource::Impl {
  ImageFolderIndex index;
  ImageTransform transform;
  ShardSampler sampler;
  LoaderOptions opt;
  GpuLoaderOptions gpu;
  torch::Device device;
  augment::Normalize norm;
  std::unique_ptr<NvjpegDecoder> decoder;  // used by the GPU thread only, after construction

  struct Epoch {
    int64_t epoch = -1;
    torch::Tensor order;  // this rank's sample indices
  };

  // The GPU stage's state: batches it rendered, ahead of the consumer by at most the prefetch.
  std::mutex mu;
  std::condition_variable cv;
  std::thread gpu_thread;
  bool stop = false, started = false;
  uint64_t generation = 0, reader_generation = 0;
  int64_t nbatches = 0;
  int64_t next_gpu = 0;      // next batch the GPU thread renders
  int64_t next_deliver = 0;  // next batch next() returns
  std::map<int64_t, Ready> ready;
  std::map<int64_t, std::exception_ptr> failed;
  GpuPipelineCounts counts;  // under mu
  SkippedImages skipped;
  // The CPU stage: file reading and planning on --workers threads, batches in order. Last: its
  // threads use the members above, so it stops first.
  OrderedPool<PreparedBatch, Epoch> readers;

  Impl(ImageFolderIndex i, ImageTransform t, ShardSampler s, LoaderOptions o, GpuLoaderOptions g, torch::Device d)
      : index(std::move(i)), transform(std::move(t)), sampler(std::move(s)), opt(o), gpu(g), device(d),
        norm(normalize_of(transform)),
        readers(o.workers, o.prefetch_batches,
                [this](const Epoch& e, int64_t b) { return prepare_batch(e.epoch, e.order, b); }) {}

  // The CPU stage of one sample: read, check, plan. Failures are kept, not thrown, so that
  // --skip-bad-images can drop just this sample.
  Prepared prepare(int64_t ep, int64_t sample) {
    Prepared p;
    p.path = &index.samples[sample].first;
    p.target = index.samples[sample].second;
    const std::string& path = *p.path;
    std::mt19937_64 rng = sample_rng(opt.seed, ep, sample);
    try {
      p.bytes = read_file(path);
      // nvJPEG pads a cut-off file with grey, as libjpeg does; PIL and the CPU pipeline refuse it.
      if (const std::string cut = image_truncation(p.bytes); !cut.empty()) {
        throw Error(path + ": truncated image: " + cut, kSkipHint);
      }
      if (jpeg_size(p.bytes, &p.height, &p.width)) {
        check_image_pixels(path, p.height, p.width, opt.max_image_pixels);
      } else {  // PNG and the rest: the CPU decoder, where this build has one
        p.decoded = decode_within_limit(p.bytes, path, opt.max_image_pixels);
        p.on_cpu = true;
        p.height = p.decoded.height;
        p.width = p.decoded.width;
        p.bytes.clear();
      }
      const SamplePlan plan = plan_sample(p.height, p.width, transform, rng);
      if (transform.mode == Augment::kEval) check_image_pixels(path, plan.resize_h, plan.resize_w, opt.max_image_pixels);
      p.desc = describe_sample(plan, transform, p.height, p.width);
      p.region = p.on_cpu ? Region{0, 0, p.height, p.width} : region_read(p.desc, transform.size);
    } catch (const std::exception& e) {
      p.error = naming(path, e);
    }
    return p;
  }

  PreparedBatch prepare_batch(int64_t ep, const torch::Tensor& ord, int64_t b) {
    const int64_t n = ord.size(0);
    const int64_t begin = b * opt.batch_size, end = std::min(n, begin + opt.batch_size);
    const int64_t* ids = ord.data_ptr<int64_t>();
    PreparedBatch batch;
    batch.reserve(static_cast<size_t>(end - begin));
    for (int64_t k = begin; k < end; ++k) batch.push_back(prepare(ep, ids[k]));
    return batch;
  }

  // The GPU stage of one batch, on `stream`: decode the regions, upload what the CPU decoded,
  // run the kernel into the batch tensor, record the event the consumer waits for.
  Ready render(PreparedBatch& batch, int64_t b, const c10::cuda::CUDAStream& stream) {
    std::vector<size_t> jpegs;
    int64_t scratch_bytes = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Prepared& p = batch[i];
      if (p.error.empty() && !p.on_cpu) {
        jpegs.push_back(i);
        scratch_bytes += int64_t{p.region.height} * p.region.width * 3;
      }
    }
    // Every buffer is allocated on `stream` and stays alive until the kernel reading it has
    // been enqueued there: the caching allocator may hand a freed block out again at once,
    // which is safe only for work ordered after it on the same stream.
    std::vector<torch::Tensor> keep;
    const auto u8 = torch::TensorOptions().dtype(torch::kUInt8).device(device);
    torch::Tensor scratch = torch::empty({std::max<int64_t>(scratch_bytes, 1)}, u8);
    std::vector<JpegRegion> regions;
    regions.reserve(jpegs.size());
    int64_t offset = 0;
    for (size_t i : jpegs) {
      Prepared& p = batch[i];
      JpegRegion r;
      r.data = reinterpret_cast<const unsigned char*>(p.bytes.data());
      r.size = p.bytes.size();
      r.top = p.region.top;
      r.left = p.region.left;
      r.height = p.region.height;
      r.width = p.region.width;
      r.pitch = static_cast<size_t>(p.region.width) * 3;
      r.dst = scratch.data_ptr<uint8_t>() + offset;
      offset += static_cast<int64_t>(r.pitch) * r.height;
      regions.push_back(r);
    }
    const std::vector<JpegResult> results = decoder->decode(regions, stream.stream());
    int64_t hardware = 0, cuda = 0, cpu = 0;
    for (size_t k = 0; k < jpegs.size(); ++k) {
      Prepared& p = batch[jpegs[k]];
      const JpegResult& res = results[k];
      if (res.outcome == JpegOutcome::kDecoded) {
        attach_pixels(&p.desc, p.region, regions[k].dst, static_cast<int64_t>(regions[k].pitch));
        ++(res.hardware ? hardware : cuda);
      } else if (res.outcome == JpegOutcome::kCorrupt) {
        p.error = *p.path + ": nvJPEG cannot decode it: " + res.reason;
      } else {  // a JPEG nvJPEG does not handle (e.g. 12-bit, lossless): the CPU decoder
        try {
          p.decoded = decode_bytes(p.bytes, *p.path, 1);
          if (p.decoded.height != p.height || p.decoded.width != p.width) {
            throw Error(*p.path + ": decoded " + std::to_string(p.decoded.height) + "x" +
                        std::to_string(p.decoded.width) + " pixels, but its JPEG header says " +
                        std::to_string(p.height) + "x" + std::to_string(p.width));
          }
          p.on_cpu = true;
          p.region = {0, 0, p.height, p.width};
        } catch (const std::exception& e) {
          p.error = naming(*p.path, e) + " (nvJPEG refused it: " + res.reason + ")";
        }
      }
    }
    for (Prepared& p : batch) {  // CPU-decoded images: through page-locked memory to the device
      if (!p.error.empty() || !p.on_cpu) continue;
      const int64_t n = static_cast<int64_t>(p.decoded.rgb.size());
      torch::Tensor host = torch::empty({n}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(true));
      std::memcpy(host.data_ptr<uint8_t>(), p.decoded.rgb.data(), static_cast<size_t>(n));
      torch::Tensor dev = torch::empty({n}, u8);
      dev.copy_(host, /*non_blocking=*/true);  // the host allocator keeps `host` until the copy ran
      keep.push_back(dev);
      attach_pixels(&p.desc, p.region, dev.data_ptr<uint8_t>(), int64_t{p.width} * 3);
      ++cpu;
    }

    std::vector<augment::Sample> descs;
    std::vector<int64_t> targets;
    int64_t bad = 0;
    for (const Prepared& p : batch) {
      if (!p.error.empty()) {
        if (!opt.skip_bad_images) throw Error(p.error, kSkipHint);
        ++bad;
        skipped.note(p.error);
        continue;
      }
      descs.push_back(p.desc);
      targets.push_back(p.target);
    }
    if (descs.empty()) {
      throw Error("every image of batch " + std::to_string(b) + " under " + index.root + " was unreadable");
    }
    const int64_t kept = static_cast<int64_t>(descs.size());
    const int64_t desc_bytes = kept * static_cast<int64_t>(sizeof(augment::Sample));
    torch::Tensor host_desc = torch::empty({desc_bytes}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(true));
    std::memcpy(host_desc.data_ptr<uint8_t>(), descs.data(), static_cast<size_t>(desc_bytes));
    torch::Tensor dev_desc = torch::empty({desc_bytes}, u8);
    dev_desc.copy_(host_desc, /*non_blocking=*/true);

    const int s = transform.size;
    const auto out_opts = torch::TensorOptions().device(device).dtype(gpu.bfloat16 ? torch::kBFloat16 : torch::kFloat32);
    torch::Tensor input = gpu.channels_last
                              ? torch::empty({kept, 3, s, s}, out_opts, at::MemoryFormat::ChannelsLast)
                              : torch::empty({kept, 3, s, s}, out_opts);
    require_cuda(launch_augment(reinterpret_cast<const augment::Sample*>(dev_desc.data_ptr<uint8_t>()),
                              static_cast<int>(kept), s, norm,
                              gpu.channels_last ? BatchLayout::kNHWC : BatchLayout::kNCHW,
                              gpu.bfloat16 ? BatchDtype::kBFloat16 : BatchDtype::kFloat32, input.data_ptr(),
                              stream.stream()),
               "the augment kernel");
    torch::Tensor target = torch::tensor(targets, torch::kInt64).pin_memory().to(device, /*non_blocking=*/true);
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(stream);
    {
      std::lock_guard<std::mutex> lock(mu);
      counts.hardware += hardware;
      counts.cuda += cuda;
      counts.cpu += cpu;
      counts.bad += bad;
    }
    return {Batch{input, target}, done};
  }

  void gpu_loop() {
    try {
      gpu_batches();
    } catch (...) {  // setting up the stream failed: the next batch reports it, nothing terminates
      std::lock_guard<std::mutex> lock(mu);
      failed[next_gpu] = std::current_exception();
      cv.notify_all();
    }
  }

  void gpu_batches() {
    c10::cuda::CUDAGuard device_guard(device);
    const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    c10::cuda::CUDAStreamGuard stream_guard(stream);
    for (;;) {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return stop || (next_gpu < nbatches && next_gpu < next_deliver + opt.prefetch_batches); });
      if (stop) return;
      const int64_t b = next_gpu++;
      const uint64_t gen = generation, rgen = reader_generation;
      lock.unlock();
      std::optional<Ready> result;
      std::exception_ptr err;
      try {
        // In order from the readers (built here with --workers 0); nullopt: a new epoch began.
        std::optional<PreparedBatch> batch = readers.next(rgen);
        if (!batch) continue;
        result = render(*batch, b, stream);
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (gen != generation) continue;
      if (err) {
        failed[b] = err;
      } else {
        ready.emplace(b, std::move(*result));
      }
      cv.notify_all();
    }
  }
};

GpuImageFolderSource::GpuImageFolderSource(ImageFolderIndex index, ImageTransform transform, ShardSampler sampler,
                                           LoaderOptions options, GpuLoaderOptions gpu, torch::Device device) {
  if (const std::string why = gpu_pipeline_unavailable(device); !why.empty()) {
    throw Error("--decode gpu: " + why, "use --decode cpu");
  }
  options.validate();
  if (options.batch_size > 65535) throw ConfigError("--batch-size above 65535 is not supported by --decode gpu");
  if (device.index() < 0) device = torch::Device(torch::kCUDA, c10::cuda::current_device());
  impl_ = std::make_unique<Impl>(std::move(index), std::move(transform), std::move(sampler), options, gpu, device);
  c10::cuda::CUDAGuard guard(device);
  try {
    impl_->decoder = std::make_unique<NvjpegDecoder>(static_cast<int>(options.batch_size));
  } catch (const std::exception& e) {
    throw Error("--decode gpu: cannot start nvJPEG on " + device.str() + ": " + message_of(e), "use --decode cpu");
  }
}

GpuImageFolderSource::~GpuImageFolderSource() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->readers.stop();  // the GPU thread may be waiting on them
  if (impl_->gpu_thread.joinable()) impl_->gpu_thread.join();
  c10::cuda::CUDAGuard guard(impl_->device);
  impl_->ready.clear();
  impl_->decoder.reset();
}

void GpuImageFolderSource::start_epoch(int64_t epoch) {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.generation;
    s.nbatches = batches_per_epoch();
    s.next_gpu = s.next_deliver = 0;
    s.ready.clear();
    s.failed.clear();
    s.started = true;
    s.reader_generation = s.readers.start({epoch, s.sampler.indices(epoch)}, s.nbatches);
  }
  if (!s.gpu_thread.joinable()) s.gpu_thread = std::thread([&s] { s.gpu_loop(); });
  s.cv.notify_all();
}

std::optional<Batch> GpuImageFolderSource::next() {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.started) throw Error("GpuImageFolderSource::next() before start_epoch()");
  if (s.next_deliver >= s.nbatches) return std::nullopt;
  const int64_t b = s.next_deliver;
  s.cv.wait(lock, [&] { return s.ready.count(b) || s.failed.count(b); });
  if (auto f = s.failed.find(b); f != s.failed.end()) std::rethrow_exception(f->second);
  Ready r = std::move(s.ready.at(b));
  s.ready.erase(b);
  ++s.next_deliver;
  lock.unlock();
  s.cv.notify_all();
  // The consumer's stream waits for the pipeline's work on the batch (no host wait), and the
  // allocator learns that the batch is used there, so its memory is not reused before then.
  const c10::cuda::CUDAStream consumer = c10::cuda::getCurrentCUDAStream(s.device.index());
  r.done->block(consumer);
  c10::cuda::CUDACachingAllocator::recordStream(r.batch.input.storage().data_ptr(), consumer);
  c10::cuda::CUDACachingAllocator::recordStream(r.batch.target.storage().data_ptr(), consumer);
  return std::move(r.batch);
}

int64_t GpuImageFolderSource::batches_per_epoch() const {
  return (impl_->sampler.samples_per_rank() + impl_->opt.batch_size - 1) / impl_->opt.batch_size;
}
int64_t GpuImageFolderSource::samples_per_epoch() const { return impl_->sampler.samples_per_rank(); }
GpuPipelineCounts GpuImageFolderSource::counts() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counts;
}
bool GpuImageFolderSource::hardware_decoder() const { return impl_->decoder->has_hardware(); }

}  // namespace ctrain::data
