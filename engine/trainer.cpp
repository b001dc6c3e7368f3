#include "engine/trainer.h"

#include <malloc.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "core/torch_error.h"
#include "core/fs.h"
#include "distributed/ddp.h"
#include "engine/checkpoint.h"
#include "engine/step.h"
#include "engine/stop.h"
#include "tracking/events.h"

namespace ctrain::engine {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // a second signal kills at once
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() { return g_stop_signal; }

void throw_if_stopped(const std::string& where, const std::string& hint) {
  if (g_stop_signal == 0) return;
  throw Stopped(std::string("stopped by ") + (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") + " " + where, hint);
}

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One line per update on a terminal (redrawn with \r, at most 10 times a second); on a pipe or
// file a plain line every `interval` steps, or every ~10 s when no interval is set, so logs
// of fast epochs stay short and slow epochs still show life. Reading the loss is a host sync,
// so it happens only when a line is printed.
class Progress {
 public:
  // `world_size` scales this rank's sample rate to the job's (every rank takes equal steps).
  Progress(int64_t epoch, int64_t epochs, int64_t steps, int64_t interval, bool enabled,
           int64_t world_size)
      : epoch_(epoch), epochs_(epochs), steps_(steps), interval_(interval), world_(world_size),
        tty_(::isatty(STDOUT_FILENO) == 1), enabled_(enabled), start_(Clock::now()), last_(start_) {}

  void step(int64_t done, int64_t samples, const torch::Tensor& loss) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    const bool due = interval_ > 0 ? done % interval_ == 0 : since_last >= (tty_ ? 0.1 : 10.0);
    if (!due) return;
    last_ = now;
    const double rate = samples * world_ / std::max(1e-9, seconds_since(start_));
    char line[160];
    std::snprintf(line, sizeof(line), "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f samples/s",
                  static_cast<long long>(epoch_), static_cast<long long>(epochs_ - 1),
                  static_cast<long long>(done), static_cast<long long>(steps_),
                  loss.item<double>(), rate);
    if (tty_) {
      std::printf("\r%-79s", line);
      dirty_ = true;
    } else {
      std::printf("%s\n", line);
    }
    std::fflush(stdout);
  }

  // Clears the terminal line so the epoch summary starts on a clean line.
  ~Progress() {
    if (dirty_) std::printf("\r%-79s\r", "");
  }

 private:
  int64_t epoch_, epochs_, steps_, interval_, world_;
  bool tty_, enabled_, dirty_ = false;
  Clock::time_point start_, last_;
};

double step_lr(const OptimConfig& o, int64_t epoch) {
  // StepLR in closed form: the value depends only on the epoch, so a resumed run needs no
  // scheduler state (LibTorch's StepLR object would have to be stepped back into place).
  if (o.lr_step_size <= 0) return o.learning_rate;
  return o.learning_rate * std::pow(o.lr_gamma, static_cast<double>(epoch / o.lr_step_size));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

// Picks the checkpoint to resume from; returns nullopt to start fresh. A corrupt or torn file
// is skipped (the newest good one wins); a checkpoint of another model is an error, because
// training over it would prune the user's checkpoints.
std::optional<std::string> resume_source(const TrainConfig& cfg, const std::string& ckpt_dir,
                                         const nlohmann::json& spec) {
  auto check_spec = [&](const std::string& path, const CheckpointMeta& m) {
    if (m.spec != spec) {
      throw Error(path + " holds a different model: " + m.spec.dump() + ", this run builds " +
                      spec.dump(),
                  "resume with the model options the checkpoint was written with, or use "
                  "another --output-dir");
    }
  };
  if (!cfg.checkpoint.resume_from.empty()) {
    require_regular_file(cfg.checkpoint.resume_from, "--resume-from");  // a FIFO would block the read
    check_spec(cfg.checkpoint.resume_from, checkpoint_peek(cfg.checkpoint.resume_from));
    return cfg.checkpoint.resume_from;
  }
  if (!cfg.checkpoint.resume) return std::nullopt;
  const auto all = checkpoint_list(ckpt_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    CheckpointMeta m;
    try {
      m = checkpoint_peek(*it);
    } catch (const Error& e) {
      std::cerr << "warning: skipping unreadable checkpoint: " << message_of(e) << "\n";
      continue;
    }
    check_spec(*it, m);
    return *it;
  }
  std::cout << "resume: no usable checkpoint in " << ckpt_dir << ", starting from scratch\n";
  return std::nullopt;
}

// Test-only fault injection, read once: CTRAIN_FAULT_AT="ACTION:EPOCH:STEP[:RANK]" makes the
// given rank SIGKILL or SIGSTOP itself, or turn its loss into NaN, when it reaches that step
// (1-based) of that epoch, in a process that is not a launcher restart. The fault tests use
// it to interrupt training at a known point with a real signal.
struct FaultInjection {
  std::string action;  // "kill", "stop" or "nan"; empty = none
  int64_t epoch = -1, step = -1, rank = -1;

  static FaultInjection from_env(int restart_count) {
    FaultInjection f;
    const char* v = std::getenv("CTRAIN_FAULT_AT");
    if (v == nullptr || restart_count > 0) return f;
    char action[16] = {0};
    long long e = -1, st = -1, r = -1;
    if (std::sscanf(v, "%15[a-z]:%lld:%lld:%lld", action, &e, &st, &r) >= 3) {
      f.action = action;
      f.epoch = e;
      f.step = st;
      f.rank = r;
    }
    return f;
  }
  bool due(int64_t epoch, int64_t step, int rank) const {
    return !action.empty() && epoch == this->epoch && step == this->step &&
           (this->rank < 0 || this->rank == rank);
  }
};

void prune_checkpoints(const std::string& dir, int64_t keep) {
  if (keep <= 0) return;
  auto all = checkpoint_list(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
}

// A full disk is refused before training when not even the first save fits: model.pt plus one
// checkpoint (weights, buffers and, with momentum, one momentum buffer per weight; torch::save
// adds a few KB of archive). When all the checkpoints this run keeps may not fit, it warns
// and goes on, since space may be freed meanwhile; a save that then fails stops the run with
// the previous files intact (write_file_atomic).
void check_disk_space(const TrainConfig& cfg, const torch::nn::Module& module,
                      const std::string& ckpt_dir) {
  uint64_t weights = 0, buffers = 0;
  for (const auto& p : module.parameters()) weights += p.numel() * p.element_size();
  for (const auto& b : module.buffers()) buffers += b.numel() * b.element_size();
  const uint64_t archive = 64 * 1024;
  const uint64_t model_bytes = weights + buffers + archive;
  const uint64_t ckpt_bytes = model_bytes + (cfg.optim.momentum != 0.0 ? weights : 0);
  const uint64_t have =
      ensure_free_space(ckpt_dir, model_bytes + ckpt_bytes, "model.pt and the first checkpoint");
  const int64_t saves = cfg.checkpoint.every > 0 ? cfg.epochs / cfg.checkpoint.every + 1 : 1;
  const int64_t kept = cfg.checkpoint.keep > 0 ? std::min(cfg.checkpoint.keep, saves) : saves;
  const uint64_t run_bytes = model_bytes + static_cast<uint64_t>(kept + 1) * ckpt_bytes;
  if (have < run_bytes) {
    std::cerr << "warning: " << cfg.output_dir << " has " << megabytes(have) << " free; this run's "
              << kept << " checkpoint(s) and model.pt may need " << megabytes(run_bytes) << "\n";
  }
}

// (loss sum, correct count, sample count) summed over ranks: one host sync and one allreduce.
std::array<double, 3> global_sums(const torch::Tensor& loss_sum, const torch::Tensor& correct,
                                  int64_t samples, distributed::ProcessGroup* pg,
                                  const std::string& what) {
  const auto dev = loss_sum.device();
  torch::Tensor sums = torch::stack({loss_sum.to(torch::kDouble), correct.to(torch::kDouble),
                                     torch::full({}, static_cast<double>(samples),
                                                 torch::TensorOptions().dtype(torch::kDouble).device(dev))});
  // Gloo reduces host tensors; NCCL only device tensors.
  if (pg != nullptr && pg->backend() != "nccl") sums = sums.cpu();
  if (pg != nullptr) pg->allreduce_sum(sums, "allreduce of " + what);
  sums = sums.cpu();
  return {sums[0].item<double>(), sums[1].item<double>(), sums[2].item<double>()};
}

// --on-nan skip: whether the loss is finite on every rank (one host sync, one allreduce).
bool finite_everywhere(const torch::Tensor& loss, distributed::ProcessGroup* pg) {
  torch::Tensor bad = loss.detach().isfinite().logical_not().to(torch::kFloat32).reshape({1});
  if (pg != nullptr) {
    if (pg->backend() != "nccl") bad = bad.cpu();
    pg->allreduce_sum(bad, "allreduce of the non-finite loss flag");
  }
  return bad.item<float>() == 0.0f;
}

// One epoch's scalars, with the epoch as the step, and the training loss every `interval`
// steps (global step = epoch * steps + step), read from the device once for the epoch.
void write_epoch_events(tracking::EventWriter& w, const EpochStats& st, const torch::Tensor& step_loss,
                        const std::vector<float>& step_size, int64_t interval) {
  w.scalar("train/loss", st.epoch, st.train_loss);
  w.scalar("train/acc", st.epoch, st.train_acc);
  w.scalar("val/loss", st.epoch, st.val.loss);
  w.scalar("val/acc", st.epoch, st.val.acc);
  w.scalar("lr", st.epoch, st.lr);
  w.scalar("samples_per_sec", st.epoch, st.samples_per_sec);
  const torch::Tensor host = step_loss.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* loss = host.data_ptr<double>();
  const int64_t steps = host.size(0);
  for (int64_t i = interval - 1; i < steps; i += interval) {
    if (step_size[static_cast<size_t>(i)] == 0.0f) continue;  // skipped by --on-nan skip
    w.scalar("train/loss_step", st.epoch * steps + i + 1, loss[i]);
  }
}

}  // namespace

void TrainConfig::validate() const {
  auto text = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  // Finite as well: CLI11 reads "nan" and "inf" as doubles.
  auto positive = [&](double v, const char* flag) {
    if (!(v > 0 && std::isfinite(v))) throw ConfigError(std::string(flag) + " must be a positive number, got " + text(v));
  };
  positive(static_cast<double>(epochs), "--epochs");
  positive(optim.learning_rate, "--learning-rate");
  if (!(optim.momentum >= 0 && optim.momentum < 1)) {
    throw ConfigError("--momentum must be in [0, 1), got " + text(optim.momentum));
  }
  if (optim.lr_step_size < 0) throw ConfigError("--step-size must be >= 0 (0: no decay)");
  positive(optim.lr_gamma, "--gamma");
  if (threads < 0) throw ConfigError("--threads must be >= 0 (0 = LibTorch default)");
  if (checkpoint.every < 0) throw ConfigError("--checkpoint-every must be >= 0");
  if (checkpoint.keep < 0) throw ConfigError("--keep-checkpoints must be >= 0 (0 = keep all)");
  if (log_interval < 0) throw ConfigError("--log-interval must be >= 0");
  if (device != "auto" && device != "cpu" && device != "cuda" && device.rfind("cuda:", 0) != 0) {
    throw ConfigError("--device must be auto, cpu, cuda or cuda:N, got '" + device + "'");
  }
  if (output_dir.empty()) throw ConfigError("--output-dir must not be empty");
  positive(dist.timeout_s, "--dist-timeout");
  positive(dist.bucket_mb, "--bucket-mb");
  if (dist.accumulate < 1) throw ConfigError("--accumulate must be >= 1");
  parse_amp(amp);  // throws naming --amp
  if (optim.optimizer != "sgd") throw ConfigError("optimizer must be sgd, got '" + optim.optimizer + "'");
  if (on_nan != "stop" && on_nan != "skip") {
    throw ConfigError("--on-nan must be stop or skip, got '" + on_nan + "'");
  }
  if (checkpoint.resume && !checkpoint.resume_from.empty()) {
    throw ConfigError("--resume and --resume-from are exclusive: pick one");
  }
}

nlohmann::json TrainConfig::to_json() const {
  return {{"epochs", epochs},
          {"seed", seed},
          {"device", device},
          {"threads", threads},
          {"output_dir", output_dir},
          {"keep_best", keep_best},
          {"on_nan", on_nan},
          {"amp", amp},
          {"channels_last", channels_last},
          {"cuda_graph", cuda_graph},
          {"optimizer", optim.optimizer},
          {"learning_rate", optim.learning_rate},
          {"momentum", optim.momentum},
          {"weight_decay", optim.weight_decay},
          {"lr_step_size", optim.lr_step_size},
          {"lr_gamma", optim.lr_gamma},
          {"checkpoint_every", checkpoint.every},
          {"accumulate", dist.accumulate},
          {"bucket_mb", dist.bucket_mb},
          {"keep_checkpoints", checkpoint.keep}};
}

// glibc's malloc serves blocks of 128 KB and more (up to a threshold it raises as it sees them
// freed, at most 32 MB) with mmap, and gives freed memory at the top of the heap back to the
// kernel. A training step allocates and frees the same large tensors every step (a ResNet-18
// batch of 16 has activations of 51 MB), so each step paid fresh page faults for them: in this
// project's VM, where a fault is costly, ResNet-18 trained at 9 images/s instead of 24
// (benchmarks/RESULTS.md). Large blocks now come from the heap and freed memory stays there
// for the next step, as PyTorch's CUDA caching allocator keeps GPU memory. The cost: the
// resident size stays at its peak instead of breathing, and the heap settles a little above
// it after the first steps (ResNet-18, batch 16: peak RSS 1.2 GB instead of 1.0 GB). A user's
// own malloc settings win.
static void keep_freed_memory() {
#ifdef __GLIBC__
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr) {
    return;
  }
  constexpr int kOneGiB = 1 << 30;  // blocks above this still get their own mapping
  ::mallopt(M_MMAP_THRESHOLD, kOneGiB);
  ::mallopt(M_TRIM_THRESHOLD, kOneGiB);
#endif
}

Runtime init_runtime(const TrainConfig& cfg, const distributed::DistFlags& flags,
                     const distributed::EnvLookup& env) {
  keep_freed_memory();
  Runtime rt;
  rt.launch = distributed::resolve_launch(flags, env);
  if (cfg.threads > 0) torch::set_num_threads(cfg.threads);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  distributed::check_gpus(rt.launch, cfg.device,
                          torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0);
  if (cfg.device == "cpu" || (cfg.device == "auto" && !torch::cuda::is_available())) {
    rt.device = torch::kCPU;
  } else if (!torch::cuda::is_available()) {
    throw ConfigError("--device " + cfg.device + " asked for CUDA, but this LibTorch sees no GPU",
                      "use --device cpu (or auto), or build against a CUDA LibTorch");
  } else if (cfg.device == "cuda" || cfg.device == "auto") {
    // One GPU per local rank, as torchrun users expect.
    rt.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(
                                                rt.launch.local_rank % torch::cuda::device_count()));
  } else {
    rt.device = torch::Device(cfg.device);
  }
  if (rt.launch.is_distributed()) {
    rt.pg = distributed::ProcessGroup::create(
        rt.launch, rt.launch.backend, rt.device,
        std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000)));
  }
  return rt;
}

EvalStats evaluate(Model& model, data::BatchSource& data, torch::Device device,
                   distributed::ProcessGroup* pg, bool channels_last) {
  torch::NoGradGuard no_grad;
  model.module->eval();
  data.start_epoch(0);
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  int64_t samples = 0;
  while (auto batch = data.next()) {
    throw_if_stopped("during evaluation");
    // One copy: to the device and, with channels_last, into NHWC at once.
    const torch::Tensor x = batch->input.to(
        torch::TensorOptions().device(device), /*non_blocking=*/true, /*copy=*/false,
        channels_last && batch->input.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Preserve);
    const torch::Tensor y = batch->target.to(device, /*non_blocking=*/true);
    const torch::Tensor logits = model.forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    correct += logits.argmax(1).eq(y).sum();
    samples += y.size(0);
  }
  const auto sums = global_sums(loss_sum, correct, samples, pg, "evaluation metrics");
  EvalStats s;
  s.samples = static_cast<int64_t>(sums[2]);
  if (s.samples > 0) {
    s.loss = sums[0] / s.samples;
    s.acc = sums[1] / s.samples;
  }
  return s;
}

TrainResult train(const TrainConfig& cfg_in, Runtime& rt, Model& model,
                  data::BatchSource& train_data, data::BatchSource& val_data,
                  const TrainHooks& hooks) {
  const auto t_start = Clock::now();
  TrainConfig cfg = cfg_in;
  // A launcher restart (TORCHELASTIC_RESTART_COUNT > 0) continues from the checkpoints.
  if (rt.launch.restart_count > 0 && cfg.checkpoint.resume_from.empty()) {
    cfg.checkpoint.resume = true;
  }
  const bool rank0 = rt.is_rank0();
  distributed::ProcessGroup* pg = rt.pg.get();
  const torch::Device device = rt.device;
  const std::string ckpt_dir = (fs::path(cfg.output_dir) / "checkpoints").string();
  // What to resume from is settled (and a missing --resume-from reported) before anything is
  // created in --output-dir.
  const auto resume_from = resume_source(cfg, ckpt_dir, model.spec);
  if (rank0) {
    ensure_writable_dir(cfg.output_dir);
    ensure_writable_dir(ckpt_dir);
    check_disk_space(cfg, *model.module, ckpt_dir);
  }

  model.module->to(device);
  if (cfg.channels_last) to_channels_last(*model.module);
  const auto optimizer_ptr = make_optimizer(cfg.optim, model.module->parameters());
  torch::optim::Optimizer& optimizer = *optimizer_ptr;
  nlohmann::json run_config = cfg.to_json();
  run_config["app"] = hooks.app_config;
  run_config["world_size"] = rt.launch.world_size;

  CheckpointMeta meta;
  if (resume_from) {
    meta = checkpoint_load(*resume_from, *model.module, &optimizer);
    if (rank0) std::cout << "resumed from " << *resume_from << " (epoch " << meta.epoch << " done)\n";
  }
  std::unique_ptr<distributed::DistributedDataParallel> ddp;
  if (pg != nullptr) {
    // Every rank must continue from the same epoch (a rank that cannot see rank 0's
    // checkpoints, e.g. an --output-dir that is not shared between nodes, would not).
    // Each rank checks sum == W * own: all ranks pass only if every value equals the mean.
    torch::Tensor e = torch::tensor({meta.epoch}, torch::kInt64);
    if (pg->backend() == "nccl") e = e.to(device);
    pg->allreduce_sum(e, "resume epoch agreement");
    e = e.cpu();
    if (e[0].item<int64_t>() != meta.epoch * pg->size()) {
      throw Error("ranks resume from different epochs (this rank: " + std::to_string(meta.epoch) +
                      ")",
                  "every rank must see the same --output-dir/checkpoints (a shared file system)");
    }
    ddp = std::make_unique<distributed::DistributedDataParallel>(model.module, *pg,
                                                                 cfg.dist.bucket_mb);
    ddp->broadcast_from_rank0();
  }
  TrainResult result;
  result.first_epoch = meta.epoch + 1;
  result.best_val_acc = meta.best_val_acc;
  result.best_epoch = meta.best_epoch;

  const std::string model_path = (fs::path(cfg.output_dir) / "model.pt").string();
  std::ofstream metrics;
  if (rank0) {
    // A run killed mid-append left a torn last line: the next line must not be glued onto it.
    const std::string metrics_path = (fs::path(cfg.output_dir) / "metrics.jsonl").string();
    if (const uint64_t torn = drop_torn_last_line(metrics_path); torn > 0) {
      std::cerr << "warning: dropped a torn last line (" << torn << " bytes, no newline) from " << metrics_path << "\n";
    }
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) throw Error("cannot open " + cfg.output_dir + "/metrics.jsonl for appending");
  }
  // TensorBoard: a new events file per process start; a resumed run continues the steps.
  std::unique_ptr<tracking::EventWriter> events;
  if (rank0 && tracking::event_files_available()) events = std::make_unique<tracking::EventWriter>(cfg.output_dir);
  const int64_t loss_step_interval = cfg.log_interval > 0 ? cfg.log_interval : 10;
  auto save = [&](const std::string& path, torch::optim::Optimizer* opt, const std::string& what) {
    if (rank0) checkpoint_save(path, *model.module, opt, meta);
    // No rank runs ahead of a save: a crash right after it restarts everyone from it.
    if (pg != nullptr) pg->barrier(what);
  };

  const auto opts = torch::TensorOptions().device(device);
  const int64_t accumulate = cfg.dist.accumulate;
  const FaultInjection fault = FaultInjection::from_env(rt.launch.restart_count);
  StepOptions step_options;
  step_options.amp = parse_amp(cfg.amp);
  step_options.channels_last = cfg.channels_last;
  if (cfg.on_nan == "skip") {  // every rank skips the same step
    step_options.accept = [pg](const torch::Tensor& loss) { return finite_everywhere(loss, pg); };
  }
  step_options.cuda_graph = cfg.cuda_graph;
  step_options.accumulate = accumulate;
  TrainStep train_step(model, optimizer, ddp.get(), device, step_options);
  if (cfg.cuda_graph && rank0) {
    if (train_step.graph_status().empty()) {
      std::cout << "--cuda-graph: each batch shape's step is captured after " << TrainStep::kGraphWarmup
                << " eager steps, and again when the learning rate changes\n";
    } else {
      std::cout << "--cuda-graph: running eagerly: " << train_step.graph_status() << "\n";
    }
    std::cout << std::flush;
  }
  int64_t skipped_steps = 0;
  for (int64_t epoch = result.first_epoch; epoch < cfg.epochs; ++epoch) {
    const double lr = step_lr(cfg.optim, epoch);
    set_lr(optimizer, lr);
    model.module->train();
    train_data.start_epoch(epoch);
    const int64_t steps = train_data.batches_per_epoch();
    Progress progress(epoch, cfg.epochs, steps, cfg.log_interval, rank0, rt.launch.world_size);
    // Per-step losses and the correct count stay on the device: reading them is a host sync,
    // done once per epoch (which also finds the first non-finite step for --on-nan stop).
    torch::Tensor step_loss = torch::zeros({steps}, opts);
    std::vector<float> step_size(static_cast<size_t>(steps), 0.0f);
    train_step.reset_correct();
    int64_t samples = 0, step = 0;
    const auto t_epoch = Clock::now();

    while (auto batch = train_data.next()) {
      if (stop_signal() != 0) {  // checked first: no message is built on the steps that go on
        throw_if_stopped("in epoch " + std::to_string(epoch) + " at step " + std::to_string(step) + " of " +
                             std::to_string(steps),
                         "the last good checkpoint is in " + ckpt_dir + "; rerun with --resume to continue");
      }
      // With --accumulate N, N micro-batches make one optimizer step; only the last of them
      // reduces gradients across ranks (the others are no_sync).
      const bool first = step % accumulate == 0;
      const bool last = (step + 1) % accumulate == 0 || step + 1 == steps;
      torch::Tensor x = batch->input.to(device, /*non_blocking=*/true);
      const torch::Tensor y = batch->target.to(device, /*non_blocking=*/true);
      if (fault.due(epoch, step + 1, rt.launch.rank)) {  // test-only, outside the step
        if (fault.action == "kill") ::raise(SIGKILL);
        if (fault.action == "stop") ::raise(SIGSTOP);
        if (fault.action == "nan") x = x * std::numeric_limits<float>::quiet_NaN();
      }
      // ---- TRAINING STEP BEGIN ---------------------------------------------------------
      const TrainStep::Result out = train_step.run(x, y, first, last, accumulate);
      // ---- TRAINING STEP END: everything that follows in the loop is bookkeeping ---------
      ++step;
      if (!out.accepted) {
        ++skipped_steps;
        continue;
      }
      torch::NoGradGuard no_grad;
      step_loss[step - 1].copy_(out.loss);
      step_size[static_cast<size_t>(step - 1)] = static_cast<float>(y.size(0));
      samples += y.size(0);
      progress.step(step, samples, out.loss);
    }
    const torch::Tensor correct = train_step.correct();

    EpochStats st;
    const torch::Tensor sizes = torch::from_blob(step_size.data(), {steps}, torch::kFloat32).to(device);
    const torch::Tensor loss_sum = (step_loss * sizes).sum();
    const auto sums = global_sums(loss_sum, correct, samples, pg, "training metrics");
    // Timed after global_sums' host sync: on a GPU the loop only queues the epoch's work.
    st.seconds = seconds_since(t_epoch);
    st.epoch = epoch;
    st.epochs = cfg.epochs;
    st.train_loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
    st.train_acc = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
    st.samples_per_sec = sums[2] / std::max(1e-9, st.seconds);
    st.lr = lr;
    st.momentum = cfg.optim.momentum;
    if (!std::isfinite(st.train_loss)) {
      // Steps skipped by --on-nan skip hold 0: only a trained non-finite step counts here.
      const torch::Tensor bad = step_loss.isfinite().logical_not().nonzero();
      const int64_t bad_step = bad.numel() > 0 ? bad[0][0].item<int64_t>() + 1 : 0;
      throw Error("training loss became non-finite in epoch " + std::to_string(epoch) +
                      (bad_step > 0 ? ", step " + std::to_string(bad_step) + " of " + std::to_string(steps)
                                    : std::string(" (on another rank)")) +
                      ": stopping before it reaches a checkpoint",
                  "lower --learning-rate, or --on-nan skip; the last good checkpoint is in " + ckpt_dir);
    }
    if (skipped_steps > 0 && rank0) {
      std::cerr << "warning: skipped " << skipped_steps << " step(s) with a non-finite loss so far\n";
    }
    st.val = evaluate(model, val_data, device, pg, cfg.channels_last);
    st.is_best = result.best_epoch < 0 || st.val.acc > result.best_val_acc;
    if (st.is_best) {
      result.best_val_acc = st.val.acc;
      result.best_epoch = epoch;
    }
    st.best_val_acc = result.best_val_acc;

    meta.epoch = epoch;
    meta.best_val_acc = result.best_val_acc;
    meta.best_epoch = result.best_epoch;
    meta.config = run_config;
    meta.spec = model.spec;
    const bool last = epoch + 1 == cfg.epochs;
    if (cfg.keep_best && st.is_best) save(model_path, nullptr, "best model save");
    if (last || (cfg.checkpoint.every > 0 && (epoch + 1) % cfg.checkpoint.every == 0)) {
      save(checkpoint_path(ckpt_dir, epoch), &optimizer,
           "checkpoint save of epoch " + std::to_string(epoch));
      if (rank0) prune_checkpoints(ckpt_dir, cfg.checkpoint.keep);
    }
    if (rank0) {
      metrics << nlohmann::json{{"epoch", epoch},
                                {"train_loss", st.train_loss},
                                {"training_acc", st.train_acc},
                                {"val_loss", st.val.loss},
                                {"validation_acc", st.val.acc},
                                {"best_val_acc", st.best_val_acc},
                                {"seconds", st.seconds},
                                {"samples_per_sec", st.samples_per_sec},
                                {"lr", st.lr},
                                {"momentum", st.momentum},
                                {"world_size", rt.launch.world_size}}
                     .dump()
              << std::endl;  // flushed per epoch: a crash loses no finished epoch's line
      if (!metrics) {
        throw Error("cannot append to " + cfg.output_dir + "/metrics.jsonl: " + std::strerror(errno),
                    "check free disk space; the checkpoints saved so far are intact");
      }
      if (events) {
        write_epoch_events(*events, st, step_loss, step_size, loss_step_interval);
        events->flush();  // TensorBoard shows the run while it trains
      }
      if (hooks.on_epoch) hooks.on_epoch(st);
    }
    result.final_val_acc = st.val.acc;
    ++result.epochs_run;
  }
  meta.spec = model.spec;
  meta.config = run_config;
  if (!cfg.keep_best || (result.epochs_run == 0 && !fs::exists(model_path))) {
    save(model_path, nullptr, "final model save");
  }
  result.seconds = seconds_since(t_start);
  return result;
}

}  // namespace ctrain::engine
