// ctrain-birds: PyTorch's transfer-learning tutorial (chickens vs turkeys as Azure ML ran it)
// as a native binary: ResNet with a new head, SGD + momentum, StepLR(7, 0.1),
// RandomResizedCrop + flip for training, Resize + CenterCrop for validation, ImageNet
// normalisation; the best validation accuracy's weights become outputs/model.pt.
// Wiring only: flags -> config -> data + model -> engine::train().
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "apps/common/cli.h"
#include "apps/common/models.h"
#include "apps/common/test_faults.h"
#include "apps/common/process_policy.h"
#include "data/decode.h"
#include "data/gpu_image_folder.h"
#include "data/image_folder.h"
#include "data/synthetic.h"
#include "engine/checkpoint.h"
#include "engine/trainer.h"
#include "models/resnet.h"
#include "models/weights.h"

namespace {

struct BirdsArgs {
  std::string data_dir;
  int64_t batch_size = 4;
  int workers = 2;
  int prefetch = 4;
  std::string arch = "resnet18";
  std::string pretrained;
  bool freeze_backbone = false;
  bool data_only = false;
  bool skip_bad = false;
  bool cache_decoded = false;
  bool full_decode = false;
  int image_size = 224;
  int64_t max_image_pixels = ctrain::data::kDefaultMaxImagePixels;
  int64_t synthetic = 0;   // --synthetic-data N: random images instead of --data-dir
  int channels_last = -1;  // --channels-last / --no-channels-last; -1: on for CUDA
  std::string decode = "auto";  // --decode gpu|cpu|auto
};

// --decode: where the image folder's JPEGs are decoded and augmented. auto = the GPU pipeline
// when training on CUDA and it can run here, else the CPU one. Returns (use GPU, why).
std::pair<bool, std::string> choose_decoder(const BirdsArgs& a, const torch::Device& device) {
  if (a.decode == "cpu") return {false, "--decode cpu"};
  std::string why = ctrain::data::gpu_pipeline_unavailable(device);
  if (why.empty() && a.cache_decoded) {
    why = "--cache-decoded keeps decoded images in host memory, which the GPU pipeline does not";
  }
  if (a.decode == "gpu") {
    if (!why.empty()) throw ctrain::ConfigError("--decode gpu: " + why, "use --decode cpu or --decode auto");
    return {true, "--decode gpu"};
  }
  return {why.empty(), why.empty() ? "--decode auto: a CUDA device and libnvjpeg" : "--decode auto: " + why};
}

// --pretrained: a safetensors file (torchvision/timm names) or a ctrain checkpoint. The
// classifier head is re-created when its class count differs.
void load_pretrained(const BirdsArgs& a, ctrain::models::ResNet& net, int64_t classes, bool verbose) {
  const auto tensors = ctrain::engine::is_checkpoint_file(a.pretrained)
                           ? ctrain::engine::checkpoint_tensors(a.pretrained)
                           : ctrain::models::read_safetensors(a.pretrained);
  std::vector<std::string> reinit;
  auto fc = tensors.find("fc.weight");
  if (fc != tensors.end() && fc->second.size(0) != classes) reinit.push_back("fc.");
  const auto rep = ctrain::models::import_weights(*net, tensors, reinit, a.pretrained);
  if (verbose) {
    std::printf("pretrained: %zu tensors from %s", rep.loaded.size(), a.pretrained.c_str());
    if (!reinit.empty()) {
      std::printf("; new classifier head for %lld classes (the file's has %lld)",
                  static_cast<long long>(classes), static_cast<long long>(fc->second.size(0)));
    }
    std::printf("\n");
  }
}

// The first validation batch: real images to check the exported model against LibTorch.
torch::Tensor onnx_sample(ctrain::data::BatchSource& val) {
  val.start_epoch(0);
  return val.next()->input.to(torch::kCPU, torch::kFloat32).contiguous();  // a GPU pipeline's is on the device
}

std::string minutes_seconds(double s) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.0fm %.0fs", std::floor(s / 60), std::fmod(s, 60));
  return buf;
}

// The flags, parsed into the trainer's config and the birds' own arguments; a code >= 0 when
// the program should exit with it (--help, a bad flag).
int parse_flags(int argc, char** argv, ctrain::engine::TrainConfig& cfg, ctrain::distributed::DistFlags& dist,
                BirdsArgs& a, bool& no_onnx) {
  cfg.epochs = 25;
  cfg.optim.learning_rate = 0.001;
  cfg.optim.momentum = 0.9;
  cfg.optim.lr_step_size = 7;
  cfg.optim.lr_gamma = 0.1;
  cfg.keep_best = true;
  CLI::App app{"ctrain-birds: fine-tune a ResNet on an image folder (data_dir/{train,val}/<class>/*)"};
  // A repeated flag takes its last value, as argparse does in the reference scripts.
  app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--data-dir,--data_dir", a.data_dir, "folder with train/ and val/ image folders (required)");
  app.add_option("--synthetic-data,--synthetic_data", a.synthetic,
                 "train on N random images (and N/10 for validation) instead of --data-dir, as torchvision's "
                 "FakeData: the model's speed without the input pipeline");
  bool channels_last_on = false, channels_last_off = false;
  auto* cl_on = app.add_flag("--channels-last,--channels_last", channels_last_on,
                             "NHWC weights and batches (the default on CUDA)");
  app.add_flag("--no-channels-last,--no_channels_last", channels_last_off, "NCHW (the default on CPU)")
      ->excludes(cl_on);
  app.add_option("--num-epochs,--num_epochs,--epochs", cfg.epochs, "total epochs");
  app.add_option("--learning-rate,--learning_rate", cfg.optim.learning_rate, "SGD learning rate");
  app.add_option("--batch-size,--batch_size", a.batch_size, "mini-batch size per process");
  app.add_option("--step-size,--step_size", cfg.optim.lr_step_size, "StepLR: epochs between lr decays (0: no decay)");
  app.add_option("--gamma", cfg.optim.lr_gamma, "StepLR decay factor");
  app.add_option("--arch", a.arch, "resnet18 | resnet34 | resnet50");
  app.add_option("--pretrained", a.pretrained, ".safetensors (torchvision/timm names) or ctrain checkpoint");
  app.add_flag("--freeze-backbone,--freeze_backbone", a.freeze_backbone, "train only the new head");
  app.add_option("--workers", a.workers, "image decode/augment threads");
  app.add_option("--prefetch", a.prefetch, "batches prepared ahead of training");
  app.add_option("--image-size,--image_size", a.image_size, "crop size fed to the network");
  app.add_flag("--skip-bad-images,--skip_bad_images", a.skip_bad, "skip and count unreadable images");
  app.add_flag("--cache-decoded,--cache_decoded", a.cache_decoded, "keep decoded images in memory");
  app.add_flag("--full-decode,--full_decode", a.full_decode, "never decode JPEGs at reduced scale");
  app.add_option("--max-image-pixels,--max_image_pixels", a.max_image_pixels,
                 "refuse images (or eval resizes) above this many pixels, as PIL does; 0: no limit");
  app.add_flag("--data-only,--data_only", a.data_only, "run only the input pipeline and print images/s");
  app.add_option("--decode", a.decode,
                 "where JPEGs are decoded and augmented: gpu (nvJPEG + one CUDA kernel), cpu (--workers "
                 "threads), auto (gpu when the device is CUDA and libnvjpeg loads)")
      ->check(CLI::IsMember({"gpu", "cpu", "auto"}));
  if (int code = ctrain::apps::add_common_flags_and_parse(app, cfg, dist, no_onnx, argc, argv); code >= 0) {
    return code;
  }
  if (channels_last_on || channels_last_off) a.channels_last = channels_last_on ? 1 : 0;
  return -1;
}

// The loader's options from the flags, and the birds' own checks: all before any data is read.
ctrain::data::LoaderOptions loader_options(const BirdsArgs& a, const ctrain::engine::TrainConfig& cfg) {
  if (a.image_size < 16) throw ctrain::ConfigError("--image-size must be at least 16");
  ctrain::data::LoaderOptions lo;
  lo.batch_size = a.batch_size;
  lo.workers = a.workers;
  lo.prefetch_batches = a.prefetch;
  lo.cache_decoded = a.cache_decoded;
  lo.skip_bad_images = a.skip_bad;
  lo.reduced_decode = !a.full_decode;
  lo.max_image_pixels = a.max_image_pixels;
  lo.seed = static_cast<uint64_t>(cfg.seed);
  lo.validate();
  if (a.synthetic < 0) throw ctrain::ConfigError("--synthetic-data must be >= 0 (0: read --data-dir)");
  if (a.data_dir.empty() == (a.synthetic == 0)) {
    throw ctrain::ConfigError(a.synthetic == 0 ? "--data-dir is required: the folder with train/ and val/"
                                               : "--data-dir and --synthetic-data are exclusive: pick one");
  }
  if (!ctrain::models::is_resnet_arch(a.arch)) {
    throw ctrain::ConfigError("--arch must be resnet18, resnet34 or resnet50, got '" + a.arch + "'");
  }
  return lo;
}

// The two image folders, indexed and checked against each other (absent for --synthetic-data).
struct Folders {
  std::vector<std::string> classes = {"class0", "class1"};  // --synthetic-data
  std::optional<ctrain::data::ImageFolderIndex> train, val;
};

Folders index_folders(const BirdsArgs& a) {
  Folders f;
  if (a.synthetic > 0) return f;
  f.train = ctrain::data::index_image_folder(a.data_dir + "/train");
  f.val = ctrain::data::index_image_folder(a.data_dir + "/val");
  ctrain::data::check_val_classes(*f.train, *f.val);
  f.classes = f.train->classes;
  return f;
}

// The training and validation batches: synthetic, or the folders through the GPU or the CPU
// pipeline (choose_decoder), and the banner's words for which and why.
struct Inputs {
  std::unique_ptr<ctrain::data::BatchSource> train, val;
  int64_t n_train = 0, n_val = 0;
  bool gpu_decode = false;
  std::string line;  // "; input: ..." for the banner ("" for synthetic data)
  ctrain::data::ImageTransform train_tf;
};

Inputs make_inputs(const BirdsArgs& a, Folders folders, ctrain::data::LoaderOptions lo,
                   const ctrain::engine::TrainConfig& cfg, const ctrain::engine::Runtime& rt) {
  const int64_t rank = rt.launch.rank, world = rt.launch.world_size;
  const auto n_classes = static_cast<int64_t>(folders.classes.size());
  Inputs in;
  ctrain::data::ImageTransform val_tf;
  in.train_tf.size = val_tf.size = a.image_size;
  val_tf.mode = ctrain::data::Augment::kEval;
  val_tf.resize = a.image_size * 256 / 224;
  if (a.synthetic > 0) {
    const auto seed = static_cast<uint64_t>(cfg.seed);
    in.n_train = a.synthetic;
    in.n_val = std::max<int64_t>(1, a.synthetic / 10);
    in.train = std::make_unique<ctrain::data::SyntheticSource>(in.n_train, a.batch_size, a.image_size, n_classes,
                                                               rank, world, seed, rt.device);
    in.val = std::make_unique<ctrain::data::SyntheticSource>(in.n_val, a.batch_size, a.image_size, n_classes, rank,
                                                             world, seed + 1, rt.device, /*pad=*/false);
    return in;
  }
  lo.pin_memory = rt.device.is_cuda();
  in.n_train = static_cast<int64_t>(folders.train->samples.size());
  in.n_val = static_cast<int64_t>(folders.val->samples.size());
  ctrain::data::ShardSampler train_sampler(in.n_train, rank, world, cfg.seed, /*shuffle=*/true);
  ctrain::data::ShardSampler val_sampler(in.n_val, rank, world, cfg.seed, /*shuffle=*/false, /*pad=*/false);
  std::string why;
  std::tie(in.gpu_decode, why) = choose_decoder(a, rt.device);
  if (in.gpu_decode) {  // batches arrive on the device in the step's layout and precision
    // bf16 for the autocast step under --amp bf16; evaluation runs without autocast: float32.
    const ctrain::data::GpuLoaderOptions train_go{cfg.channels_last, cfg.amp == ctrain::engine::Amp::kBf16};
    const ctrain::data::GpuLoaderOptions val_go{cfg.channels_last, false};
    try {
      in.train = std::make_unique<ctrain::data::GpuImageFolderSource>(*folders.train, in.train_tf, train_sampler, lo,
                                                                      train_go, rt.device);
      in.val = std::make_unique<ctrain::data::GpuImageFolderSource>(*folders.val, val_tf, val_sampler, lo, val_go,
                                                                    rt.device);
      const bool engine = dynamic_cast<const ctrain::data::GpuImageFolderSource&>(*in.train).hardware_decoder();
      in.line = "; input: JPEGs decoded on " + rt.device.str() + " by nvJPEG (" +
                (engine ? "the hardware JPEG engine" : "CUDA: this GPU has no JPEG engine") +
                "), augmented in one kernel, " + std::to_string(a.workers) + " file-reading threads (" + why + ")";
      return in;
    } catch (const ctrain::Error& e) {  // nvJPEG loads but does not start on this GPU
      if (a.decode == "gpu") throw;
      in.gpu_decode = false;
      why = "--decode auto: the GPU pipeline did not start: " + std::string(e.what());
      in.train.reset();
    }
  }
  in.train = std::make_unique<ctrain::data::ImageFolderSource>(std::move(*folders.train), in.train_tf, train_sampler, lo);
  in.val = std::make_unique<ctrain::data::ImageFolderSource>(std::move(*folders.val), val_tf, val_sampler, lo);
  in.line = "; input: decoded and augmented on the CPU by " + std::to_string(a.workers) + " worker threads (" + why +
            ")";
  return in;
}

// --data-only, the diagnostic for starving GPUs: how fast is the input pipeline alone?
void run_data_only(Inputs& in, const BirdsArgs& a, int64_t epochs, const ctrain::engine::Runtime& rt) {
  if (rt.is_rank0() && !in.line.empty()) std::printf("%s\n", in.line.c_str() + 2);  // "input: ..."
  for (int64_t e = 0; e < epochs; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    int64_t images = 0;
    in.train->start_epoch(e);
    while (auto b = in.train->next()) images += b->input.size(0);
    if (rt.device.is_cuda()) torch::cuda::synchronize();  // GPU batches: count the work, not its launch
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("data-only epoch %lld: %lld images in %.2fs = %.1f images/s (%d workers%s)\n",
                static_cast<long long>(e), static_cast<long long>(images), s, images / s, a.workers,
                in.gpu_decode ? ", GPU decode" : "");
  }
}

// The ResNet with its new head (and --pretrained weights, --freeze-backbone).
ctrain::engine::Model make_model(const BirdsArgs& a, const std::vector<std::string>& classes,
                                 const ctrain::data::ImageTransform& tf, bool verbose) {
  ctrain::models::ModelSpec spec;
  spec.arch = a.arch;
  spec.num_classes = static_cast<int64_t>(classes.size());
  spec.classes = classes;
  spec.image_size = a.image_size;
  std::copy(tf.mean.begin(), tf.mean.end(), spec.mean.begin());
  std::copy(tf.stdev.begin(), tf.stdev.end(), spec.stdev.begin());
  ctrain::engine::Model model = ctrain::models::build_model(spec);
  ctrain::models::ResNet net(std::dynamic_pointer_cast<ctrain::models::ResNetImpl>(model.module));
  if (!a.pretrained.empty()) load_pretrained(a, net, spec.num_classes, verbose);
  if (a.freeze_backbone) net->freeze_backbone();
  return model;
}

void print_banner(const BirdsArgs& a, const std::vector<std::string>& classes, const Inputs& in,
                  const ctrain::engine::TrainConfig& cfg, const ctrain::engine::Runtime& rt) {
  std::printf("ctrain-birds: %s, %zu classes (", a.arch.c_str(), classes.size());
  for (size_t i = 0; i < classes.size(); ++i) std::printf("%s%s", i ? ", " : "", classes[i].c_str());
  std::printf("), %lld train / %lld val %simages, device %s%s%s\n", static_cast<long long>(in.n_train),
              static_cast<long long>(in.n_val), a.synthetic > 0 ? "synthetic " : "", rt.device.str().c_str(),
              cfg.channels_last ? ", channels-last" : "", in.line.c_str());
  if (rt.launch.is_distributed()) {
    std::printf("distributed: %s, %s\n", rt.launch.describe().c_str(), rt.pg ? rt.pg->transport().c_str() : "");
  }
  std::fflush(stdout);
}

// The tutorial's per-epoch lines.
void print_epoch(const ctrain::engine::EpochStats& s) {
  std::printf("Epoch %lld/%lld\n----------\n", static_cast<long long>(s.epoch), static_cast<long long>(s.epochs - 1));
  std::printf("train Loss: %.4f Acc: %.4f\n", s.train_loss, s.train_acc);
  std::printf("val Loss: %.4f Acc: %.4f\n\n", s.val.loss, s.val.acc);
  std::fflush(stdout);
}

// After training: how many images each GPU decoder took, and how many were skipped.
void print_input_counts(const Inputs& in) {
  int64_t bad = 0;
  for (const auto* src : {in.train.get(), in.val.get()}) {
    if (const auto* f = dynamic_cast<const ctrain::data::ImageFolderSource*>(src)) bad += f->bad_images();
    if (const auto* g = dynamic_cast<const ctrain::data::GpuImageFolderSource*>(src)) {
      const auto c = g->counts();
      bad += c.bad;
      std::printf("GPU decode (%s): %lld by the JPEG engine, %lld by CUDA, %lld on the CPU\n",
                  src == in.train.get() ? "train" : "val", static_cast<long long>(c.hardware),
                  static_cast<long long>(c.cuda), static_cast<long long>(c.cpu));
    }
  }
  if (bad > 0) std::printf("skipped unreadable images: %lld\n", static_cast<long long>(bad));
}

int run(int argc, char** argv) {
  ctrain::engine::TrainConfig cfg;
  ctrain::distributed::DistFlags dist;
  BirdsArgs a;
  bool no_onnx = false;
  if (const int code = parse_flags(argc, argv, cfg, dist, a, no_onnx); code >= 0) return code;
  const ctrain::data::LoaderOptions lo = loader_options(a, cfg);
  Folders folders = index_folders(a);  // bad folders fail before anything in --output-dir is touched
  const std::vector<std::string> classes = folders.classes;

  ctrain::engine::Runtime rt = ctrain::engine::init_runtime(cfg, dist);
  cfg.channels_last = a.channels_last < 0 ? rt.device.is_cuda() : a.channels_last == 1;
  // cuDNN tries the convolution algorithms for each new shape once and keeps the fastest, as
  // torch.backends.cudnn.benchmark = True does; a training run has only two or three shapes.
  if (rt.device.is_cuda()) at::globalContext().setBenchmarkCuDNN(true);
  Inputs in = make_inputs(a, std::move(folders), lo, cfg, rt);
  if (a.data_only) {
    run_data_only(in, a, cfg.epochs, rt);
    return 0;
  }
  ctrain::engine::Model model = make_model(a, classes, in.train_tf, rt.is_rank0());

  ctrain::engine::TrainHooks hooks;
  ctrain::apps::install_test_faults(hooks, rt);
  hooks.app_config = {{"data_dir", a.data_dir}, {"synthetic_data", a.synthetic}, {"batch_size", a.batch_size},
                      {"pretrained", a.pretrained}, {"freeze_backbone", a.freeze_backbone}};
  hooks.on_epoch = print_epoch;
  if (rt.is_rank0()) print_banner(a, classes, in, cfg, rt);
  const auto r = ctrain::engine::train(cfg, rt, model, *in.train, *in.val, hooks);
  if (rt.is_rank0()) {
    std::printf("Training complete in %s\n", minutes_seconds(r.seconds).c_str());
    std::printf("Best val Acc: %.4f\n", r.best_val_acc);
    if (!no_onnx) ctrain::apps::export_final_model(model, cfg.output_dir, onnx_sample(*in.val));
    ctrain::apps::write_run_report(cfg.output_dir);
    print_input_counts(in);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Process-wide policy, set here rather than by a library: freed memory stays for the next
  // step, the loader's threads are the decode parallelism (no OpenCV pool beneath them), and
  // SIGTERM stops at the next step boundary.
  ctrain::apps::keep_freed_memory();
  ctrain::data::use_single_threaded_backend();
  ctrain::install_stop_handlers();
  // Where libnvjpeg is, when it is in none of the usual places (README, The GPU image pipeline).
  if (const char* nvjpeg = std::getenv("CTRAIN_NVJPEG_LIBRARY"); nvjpeg != nullptr && *nvjpeg != '\0') {
    ctrain::data::set_nvjpeg_library(nvjpeg);
  }
  return ctrain::apps::guarded_main("ctrain-birds", [&] { return run(argc, argv); });
}
