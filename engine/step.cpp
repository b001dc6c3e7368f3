#include "engine/step.h"

#include <sstream>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/torch_compat.h"
#include "distributed/ddp.h"

namespace ctrain::engine {

// ---- the optimizer ----------------------------------------------------------------------

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o,
                                                        std::vector<torch::Tensor> params) {
  switch (o.optimizer) {
    case Optimizer::kSgd:
      break;
  }
  return std::make_unique<MultiTensorSgd>(
      std::move(params),
      torch::optim::SGDOptions(o.learning_rate).momentum(o.momentum).weight_decay(o.weight_decay));
}

namespace {

// The optimizer's state key of a parameter: LibTorch 1.13 keys by the TensorImpl's address as
// text (c10::guts::to_string, an ostream of the pointer), 2.x by the address itself.
template <class State>
typename State::key_type state_key(const State&, const torch::Tensor& param) {
  if constexpr (std::is_same_v<typename State::key_type, std::string>) {
    std::ostringstream os;
    os << param.unsafeGetTensorImpl();
    return os.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

}  // namespace

torch::Tensor MultiTensorSgd::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    std::vector<torch::Tensor> keys, params, grads;  // keys: the group's own tensors
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      keys.push_back(p);
      params.push_back(p.data());
      grads.push_back(p.grad().data());
    }
    if (params.empty()) continue;
    // d_p = d_p.add(p, weight_decay)
    if (o.weight_decay() != 0) grads = at::_foreach_add(grads, params, o.weight_decay());
    if (o.momentum() != 0) {
      // A parameter's first step takes buf = d_p; the others buf.mul_(momentum).add_(d_p, 1 - dampening).
      std::vector<torch::Tensor> bufs(params.size()), old_bufs, old_grads;
      for (size_t i = 0; i < params.size(); ++i) {
        const auto key = state_key(state_, keys[i]);
        auto it = state_.find(key);
        if (it == state_.end()) {
          bufs[i] = torch::clone(grads[i]).detach();
          auto st = std::make_unique<torch::optim::SGDParamState>();
          st->momentum_buffer(bufs[i]);
          state_[key] = std::move(st);
        } else {
          bufs[i] = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
          old_bufs.push_back(bufs[i]);
          old_grads.push_back(grads[i]);
        }
      }
      if (!old_bufs.empty()) {
        at::_foreach_mul_(old_bufs, o.momentum());
        at::_foreach_add_(old_bufs, old_grads, 1 - o.dampening());
      }
      grads = o.nesterov() ? at::_foreach_add(grads, bufs, o.momentum()) : bufs;
    }
    at::_foreach_add_(params, grads, -1 * o.lr());
  }
  return loss;
}

void zero_grad_to_none(torch::optim::Optimizer& opt) {
  for (auto& group : opt.param_groups()) {
    for (auto& p : group.params()) {
      if (p.grad().defined()) p.mutable_grad().reset();
    }
  }
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& tensors : {module.parameters(), module.buffers()}) {
    for (auto t : tensors) {
      if (t.dim() == 4) t.set_data(t.data().contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
}

// ---- the step -----------------------------------------------------------------------------

TrainStep::TrainStep(Model& model, torch::optim::Optimizer& optimizer,
                     distributed::DistributedDataParallel* ddp, torch::Device device,
                     StepOptions options)
    : model_(model), optimizer_(optimizer), ddp_(ddp), device_(device), options_(std::move(options)),
      params_(model.module->parameters()) {
  if (options_.amp == Amp::kFp16) {
    if (!device_.is_cuda()) {
      throw ConfigError("--amp fp16 needs a CUDA device: LibTorch's CPU autocast has bf16 only",
                        "use --amp bf16 on CPU");
    }
    scaler_ = std::make_unique<GradScaler>();
  }
  if (options_.cuda_graph) {
    // Only a step with no host sync and no collective can be captured today.
    if (const std::string why = graph_unavailable(); !why.empty()) {
      graph_status_ = why;
    } else if (!device_.is_cuda()) {
      graph_status_ = "the device is " + device_.str() + ", and CUDA graphs need a CUDA device";
    } else if (ddp_ != nullptr) {
      graph_status_ = "with more than one process: the gradient allreduce is not captured yet";
    } else if (options_.amp == Amp::kFp16) {
      graph_status_ = "--amp fp16: the loss scaler checks for inf/NaN on the host every step (use --amp bf16)";
    } else if (options_.accept) {
      graph_status_ = "--on-nan skip decides on the host every step";
    } else if (options_.accumulate != 1) {
      graph_status_ = "--accumulate " + std::to_string(options_.accumulate) + ": only whole steps are captured";
    }
  }
  // DDP launches its allreduces from autograd hooks, and autocast works through the
  // dispatcher's autograd-aware kernels: both keep the autograd path. So does a captured
  // step: the manual path's buffers follow the batch shape, outside any graph's memory.
  manual_grad_ = model.train_forward && model.backward && ddp == nullptr && options_.amp == Amp::kOff && !captures();
  reset_correct();
}

void TrainStep::reset_correct() {
  // In place: a captured step adds to this tensor's memory.
  if (correct_.defined()) {
    correct_.zero_();
  } else {
    correct_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device_));
  }
}

// cross_entropy(logits, target) as LibTorch computes it (1.13 and 2.x): nll_loss over
// log_softmax(logits, 1), mean reduction, no class weights, ignore_index -100. Keeps what
// manual_backward() needs; no autograd graph.
torch::Tensor TrainStep::manual_loss(const torch::Tensor& logits, const torch::Tensor& target) {
  torch::NoGradGuard no_grad;
  log_probs_ = at::_log_softmax(logits, 1, /*half_to_float=*/false);
  torch::Tensor loss;
  std::tie(loss, total_weight_) =
      at::nll_loss_forward(log_probs_, target, {}, at::Reduction::Mean, /*ignore_index=*/-100);
  return loss;
}

// What (loss / accumulate).backward() does: the gradient flows back through the division,
// nll_loss_backward and _log_softmax_backward_data to the logits, and the model takes it from
// there. The seed is computed as autograd's DivBackward computes it, so the bits agree.
void TrainStep::manual_backward(const torch::Tensor& target, int64_t accumulate) {
  torch::NoGradGuard no_grad;
  if (loss_grad_accumulate_ != accumulate) {
    const torch::Tensor one = torch::ones({}, log_probs_.options());
    loss_grad_ = accumulate > 1 ? one / static_cast<double>(accumulate) : one;
    loss_grad_accumulate_ = accumulate;
  }
  torch::Tensor grad = at::nll_loss_backward(loss_grad_, log_probs_, target, {}, at::Reduction::Mean,
                                             /*ignore_index=*/-100, total_weight_);
  grad = at::_log_softmax_backward_data(grad, log_probs_, 1, log_probs_.scalar_type());
  model_.backward(grad);
}

TrainStep::Result TrainStep::run(const torch::Tensor& input, const torch::Tensor& target, const MicroBatch& micro) {
  const bool first = micro.first(), last = micro.last();
  const int64_t accumulate = micro.accumulate;
  // B = micro-batch size. input: [B, ...] float, target: [B] int64. A captured step copies
  // them into its own buffers (fixed addresses: step_graph_cuda.cpp). Otherwise a batch
  // already on the device in the wanted layout is used as it is (the copy would cost about 2%
  // of an MNIST step), and any other is copied once into the step's buffers, to the device
  // and, with --channels-last, into NHWC (reallocated only when the shape changes: the last,
  // shorter batch).
  if (captures() && first && last && accumulate == 1) {
    if (auto r = run_graph(input, target)) return *r;
  }
  const bool nhwc = options_.channels_last && input.dim() == 4;
  const bool as_is = input.device() == device_ && target.device() == device_ &&
                     (!nhwc || input.is_contiguous(at::MemoryFormat::ChannelsLast));
  if (!as_is) {
    if (!input_.defined() || input_.sizes() != input.sizes()) {
      const auto opts = input.options().device(device_);
      input_ = nhwc ? torch::empty(input.sizes(), opts, at::MemoryFormat::ChannelsLast)
                    : torch::empty(input.sizes(), opts);
      target_ = torch::empty(target.sizes(), target.options().device(device_));
    }
    input_.copy_(input, /*non_blocking=*/true);
    target_.copy_(target, /*non_blocking=*/true);
  }
  const torch::Tensor& x = as_is ? input : input_;
  const torch::Tensor& y = as_is ? target : target_;
  return run_eager(x, y, first, last, accumulate);
}

TrainStep::Result TrainStep::run_eager(const torch::Tensor& x, const torch::Tensor& y, bool first, bool last,
                                       int64_t accumulate) {
  Result r;
  if (first) zero_grad_to_none(optimizer_);
  if (ddp_) ddp_->sync_buffers();  // BatchNorm statistics follow rank 0's, as in PyTorch
  torch::Tensor logits, loss;
  if (manual_grad_) {
    logits = model_.train_forward(x);
    loss = manual_loss(logits, y);
  } else {
    std::optional<AutocastGuard> autocast;
    if (options_.amp != Amp::kOff) {
      autocast.emplace(device_.type(), options_.amp == Amp::kBf16 ? at::kBFloat16 : at::kHalf);
    }
    logits = model_.forward(x);
    autocast.reset();
    // The loss in float whatever the autocast dtype, as autocast's fp32 list has it.
    loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), y);
  }
  r.loss = loss.detach();
  if (options_.accept && !options_.accept(r.loss)) {
    zero_grad_to_none(optimizer_);  // the cycle's accumulated gradients go with it
    r.accepted = false;
    return r;
  }
  if (manual_grad_) {
    manual_backward(y, accumulate);
  } else {
    if (ddp_) ddp_->prepare(last);
    torch::Tensor to_backward = accumulate > 1 ? loss / static_cast<double>(accumulate) : loss;
    if (scaler_) to_backward = scaler_->scale_loss(to_backward);
    to_backward.backward();
  }
  if (last) {
    if (ddp_) ddp_->finish();  // waits for the bucket allreduces: grads are now averaged
    bool found_inf = false;
    if (scaler_) found_inf = scaler_->unscale(params_);
    if (!found_inf) optimizer_.step();
    if (scaler_) scaler_->update(found_inf);
    r.updated = !found_inf;
  }
  torch::NoGradGuard no_grad;
  correct_ += logits.argmax(1).eq(y).sum();
  return r;
}

}  // namespace ctrain::engine
