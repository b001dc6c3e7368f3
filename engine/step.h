#pragma once
// The training step as one unit, the only code between the loop's TRAINING STEP fences:
// batch -> forward (under autocast with --amp) -> loss -> backward (gradients reduced by the
// DDP hooks, scaled with --amp fp16; the model's own when it has one, Model::backward) ->
// optimizer step, plus the running correct count. On a GPU (and with --channels-last) its
// inputs live in buffers it owns (fixed addresses per batch shape), so a later change can
// capture it in a CUDA graph without a second loop. Fault injection, logging, checkpoints and
// evaluation stay outside.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "engine/amp.h"
#include "engine/config.h"
#include "engine/model.h"

namespace ctrain::distributed {
class DistributedDataParallel;  // distributed/ddp.h: the step only holds a pointer to it
}  // namespace ctrain::distributed

namespace ctrain::engine {

// LibTorch's SGD (the same options, state and checkpoint format) whose step() updates every
// parameter of a group with LibTorch's multi-tensor kernels (at::_foreach_*), as PyTorch 2.x's
// SGD does by default on CUDA (foreach=True): on a GPU a handful of launches per step instead
// of one to three per parameter (ResNet-18: 62 parameters). Same arithmetic, tensor by tensor,
// as torch::optim::SGD::step, so the results are bit-equal (tests/engine/step_test.cpp).
class MultiTensorSgd : public torch::optim::SGD {
 public:
  using torch::optim::SGD::SGD;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// The optimizer the config names, over `params` (OptimConfig::optimizer: "sgd" today).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o,
                                                        std::vector<torch::Tensor> params);

// optimizer.zero_grad(set_to_none=True), PyTorch 2.x's default (LibTorch 1.13's zero_grad()
// zeroes instead): a parameter that gets no gradient keeps an undefined .grad, and SGD then
// leaves it alone rather than moving it by momentum and weight decay.
void zero_grad_to_none(torch::optim::Optimizer& opt);

// --channels-last: every 4-D parameter and buffer of `module` becomes NHWC in place (same
// values, same tensors; call before the optimizer and DDP take them).
void to_channels_last(torch::nn::Module& module);

struct StepOptions {
  Amp amp = Amp::kOff;
  bool channels_last = false;  // 4-D input batches go into an NHWC buffer
  // Called with the detached loss after the forward, before the backward; false drops this
  // micro-batch and its accumulation cycle (no backward, no update). Used by --on-nan skip,
  // whose check must agree on every rank.
  std::function<bool(const torch::Tensor& loss)> accept;
  // --cuda-graph: capture the step in a CUDA graph per batch shape where it can be (see
  // TrainStep::graph_status), after warm-up steps run eagerly. `accumulate` must be 1 for it.
  bool cuda_graph = false;
  int64_t accumulate = 1;
};

// A micro-batch's place in its accumulation cycle (--accumulate N: N micro-batches make one
// optimizer step, and only the last of them reduces gradients across ranks; the others are
// no_sync). The epoch's last step ends its cycle early when the steps do not divide by N.
struct MicroBatch {
  int64_t step = 0;         // 0-based step of the epoch
  int64_t accumulate = 1;   // micro-batches per optimizer step
  int64_t epoch_steps = 0;  // steps in the epoch (0: not known, no early end)
  bool first() const { return step % accumulate == 0; }
  bool last() const { return (step + 1) % accumulate == 0 || step + 1 == epoch_steps; }
};

struct StepGraphs;  // step_graph_cuda.cpp: per batch shape, buffers and the captured graph

class TrainStep {
 public:
  // `ddp` may be null (one process). The model must already be on `device`.
  TrainStep(Model& model, torch::optim::Optimizer& optimizer,
            distributed::DistributedDataParallel* ddp, torch::Device device, StepOptions options);

  // Eager steps per batch shape before a captured step (--cuda-graph) is recorded.
  static constexpr int kGraphWarmup = 3;

  struct Result {
    // This micro-batch's mean loss (device, detached, float). With a captured step it is the
    // graph's own buffer, overwritten by the next run(): copy it (on the stream) before then.
    torch::Tensor loss;
    bool accepted = true;   // false: dropped by StepOptions::accept
    bool updated = false;   // the optimizer stepped (false on a non-last micro-batch, a
                            // dropped one, or an fp16 step with inf/NaN gradients)
  };
  // One micro-batch (a whole step by default). The first of a cycle zeroes the gradients; the
  // last reduces them across ranks and steps the optimizer. `input` and `target` may be on
  // the host or the device: a batch already on the device in the wanted layout is used as it
  // is (not captured); any other is copied once, into the step's own buffers on the device.
  Result run(const torch::Tensor& input, const torch::Tensor& target, const MicroBatch& micro = {});

  // Correct predictions of the accepted micro-batches since reset_correct() (device, int64).
  const torch::Tensor& correct() const { return correct_; }
  void reset_correct();
  const GradScaler* scaler() const { return scaler_.get(); }
  GradScaler* scaler() { return scaler_.get(); }
  // With StepOptions::cuda_graph: "" when steps are captured, else why they run eagerly.
  const std::string& graph_status() const { return graph_status_; }

 private:
  Result run_eager(const torch::Tensor& x, const torch::Tensor& y, bool first, bool last, int64_t accumulate);
  // The captured step for this batch: nullopt when it must run eagerly (step_graph_cuda.cpp;
  // step_graph_none.cpp where LibTorch has no CUDA).
  std::optional<Result> run_graph(const torch::Tensor& input, const torch::Tensor& target);
  // Why this LibTorch cannot capture at all ("" when it can).
  static std::string graph_unavailable();
  bool captures() const { return options_.cuda_graph && graph_status_.empty(); }
  torch::Tensor manual_loss(const torch::Tensor& logits, const torch::Tensor& target);
  void manual_backward(const torch::Tensor& target, int64_t accumulate);

  Model& model_;
  torch::optim::Optimizer& optimizer_;
  distributed::DistributedDataParallel* ddp_;
  torch::Device device_;
  StepOptions options_;
  bool manual_grad_;                     // the model's own backward instead of autograd
  std::unique_ptr<GradScaler> scaler_;  // --amp fp16 only
  std::vector<torch::Tensor> params_;
  torch::Tensor input_, target_, correct_;  // input_, target_: the step's own copies
  // The manual path (Model::backward): the loss's intermediates, and d(loss / accumulate)/d(loss).
  torch::Tensor log_probs_, total_weight_, loss_grad_;
  int64_t loss_grad_accumulate_ = 0;
  std::string graph_status_;  // with cuda_graph: "" = steps are captured, else why not
  std::shared_ptr<StepGraphs> graphs_;
};

}  // namespace ctrain::engine
