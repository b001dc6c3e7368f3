#pragma once
// The engine's configuration: plain structs with inline defaults. Apps fill them from flags
// (CLI11, in apps/ only) and call validate() once; errors name the flag to change.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ctrain::engine {

// The config's named choices: enums, converted from their flag's text once (by CLI11, in
// apps/common/cli.h) and back to it for config.json and the checkpoints.
enum class Amp { kOff, kBf16, kFp16 };  // --amp
enum class OnNan { kStop, kSkip };      // --on-nan
enum class Optimizer { kSgd };          // SGD with momentum and weight decay: all there is today

template <typename E>
struct Choice {
  const char* name;
  E value;
};
inline constexpr Choice<Amp> kAmpChoices[] = {{"off", Amp::kOff}, {"bf16", Amp::kBf16}, {"fp16", Amp::kFp16}};
inline constexpr Choice<OnNan> kOnNanChoices[] = {{"stop", OnNan::kStop}, {"skip", OnNan::kSkip}};
inline constexpr Choice<Optimizer> kOptimizerChoices[] = {{"sgd", Optimizer::kSgd}};

// A choice's name ("bf16").
template <typename E, size_t N>
const char* choice_name(const Choice<E> (&choices)[N], E value) {
  for (const auto& c : choices) {
    if (c.value == value) return c.name;
  }
  return "?";
}
// "off, bf16 or fp16", for messages.
template <typename E, size_t N>
std::string choice_list(const Choice<E> (&choices)[N]) {
  std::string s;
  for (size_t i = 0; i < N; ++i) s += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + choices[i].name;
  return s;
}

inline const char* amp_name(Amp a) { return choice_name(kAmpChoices, a); }
inline const char* on_nan_name(OnNan o) { return choice_name(kOnNanChoices, o); }
inline const char* optimizer_name(Optimizer o) { return choice_name(kOptimizerChoices, o); }
// "off" | "bf16" | "fp16" (--amp); throws ConfigError naming --amp otherwise.
Amp parse_amp(const std::string& name);

struct OptimConfig {
  Optimizer optimizer = Optimizer::kSgd;  // make_optimizer()
  double learning_rate = 0.01;  // --learning-rate
  double momentum = 0.0;        // --momentum (SGD)
  double weight_decay = 0.0;
  // StepLR: lr = learning_rate * lr_gamma^(epoch / lr_step_size); 0 disables.
  int64_t lr_step_size = 0;
  double lr_gamma = 0.1;
};

struct CheckpointConfig {
  int64_t every = 1;     // --checkpoint-every N epochs (0: only the final epoch)
  int64_t keep = 3;      // --keep-checkpoints: newest N kept, older ones deleted
  bool resume = false;   // --resume: continue from the newest good checkpoint in output_dir
  std::string resume_from;  // --resume-from PATH
};

struct DistConfig {
  double timeout_s = 300;   // --dist-timeout: rendezvous and every collective give up after this
  double bucket_mb = 25;    // --bucket-mb: DDP gradient bucket size
  int64_t accumulate = 1;   // --accumulate N: N micro-batches per optimizer step (no_sync for N-1)
};

struct TrainConfig {
  int64_t epochs = 20;  // --epochs: the total, so a resumed run trains epochs - done
  int64_t seed = 42;    // --seed: init, shuffle order (with the epoch), everything random
  std::string device = "auto";  // --device auto|cpu|cuda
  int threads = 0;              // --threads: intra-op threads, 0 = LibTorch's default
  std::string output_dir = "./outputs";  // --output-dir
  int64_t log_interval = 0;     // --log-interval steps between progress lines (0: auto)
  // Which validation metric picks outputs/model.pt: false = the last epoch's weights (the
  // MNIST sample), true = the best validation accuracy's (the transfer-learning tutorial).
  bool keep_best = false;
  // --on-nan: stop (default) ends the run with an error naming the first non-finite step,
  // before that epoch reaches a checkpoint; "skip" drops such steps (no optimizer update) and
  // counts them. skip costs one host sync (and, distributed, one small allreduce) per step.
  OnNan on_nan = OnNan::kStop;
  // --amp: off, bf16 (autocast; CPU and CUDA) or fp16 (autocast + dynamic loss scaling
  // with GradScaler's rules; CUDA only).
  Amp amp = Amp::kOff;
  // --channels-last: 4-D weights, gradients and input batches in NHWC, the layout cuDNN's
  // tensor-core convolutions use without transposes (ctrain-birds: on by default on CUDA).
  bool channels_last = false;
  // --cuda-graph: the training step captured in a CUDA graph per batch shape and replayed
  // (CUDA, one process, no fp16 scaler, no --on-nan skip, --accumulate 1; otherwise the run
  // says why once and runs eagerly). Opt-in until its figures are measured on a GPU node.
  bool cuda_graph = false;
  OptimConfig optim;
  CheckpointConfig checkpoint;
  DistConfig dist;

  // Throws ConfigError naming the offending flag.
  void validate() const;
  nlohmann::json to_json() const;
};

}  // namespace ctrain::engine
