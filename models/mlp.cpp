#include "models/mlp.h"

#include "core/error.h"

namespace ctrain::models {

MlpImpl::MlpImpl(const MlpOptions& o) : options_(o) {
  if (o.in_features <= 0 || o.hidden1 <= 0 || o.hidden2 <= 0 || o.num_classes <= 0) {
    throw ConfigError("MLP layer sizes must be positive (--first-layer-neurons, "
                      "--second-layer-neurons)");
  }
  fc1_ = register_module("fc1", torch::nn::Linear(o.in_features, o.hidden1));
  fc2_ = register_module("fc2", torch::nn::Linear(o.hidden1, o.hidden2));
  fc3_ = register_module("fc3", torch::nn::Linear(o.hidden2, o.num_classes));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  // In-place ReLU on the Linear outputs: addmm's backward does not need its output, so this
  // saves two allocations per step with identical values and gradients.
  torch::Tensor h = fc1_->forward(x).relu_();
  h = fc2_->forward(h).relu_();
  return fc3_->forward(h);
}

MlpManualGrad::MlpManualGrad(Mlp mlp)
    : mlp_(std::move(mlp)), params_(mlp_->parameters()), grads_(params_.size()), scratch_(params_.size()) {}

// B = batch size, I = in_features, H1 = hidden1, H2 = hidden2, C = num_classes.
// nn::Linear on a 2-D input is at::addmm(bias, x, weight.t()) in LibTorch 1.13 and 2.x alike.
torch::Tensor MlpManualGrad::forward(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const int64_t batch = x.size(0);
  if (!h1_.defined() || h1_.size(0) != batch) {  // the last, shorter batch of an epoch
    const auto o = params_[0].options();
    const MlpOptions& m = mlp_->options();
    h1_ = torch::empty({batch, m.hidden1}, o);
    h2_ = torch::empty({batch, m.hidden2}, o);
    logits_ = torch::empty({batch, m.num_classes}, o);
    g2_ = torch::empty_like(h2_);
    g1_ = torch::empty_like(h1_);
  }
  x_ = x;
  at::addmm_out(h1_, params_[1], x, params_[0].t()).relu_();  // [B, H1]
  at::addmm_out(h2_, params_[3], h1_, params_[2].t()).relu_();  // [B, H2]
  at::addmm_out(logits_, params_[5], h2_, params_[4].t());  // [B, C]
  return logits_;
}

void MlpManualGrad::backward(const torch::Tensor& grad_logits) {
  torch::NoGradGuard no_grad;
  // Autograd's formulas for y = addmm(b, a, W.t()) with grad g (tools/autograd/derivatives.yaml,
  // mm_mat1_backward / mm_mat2_backward for a row-major `a` and the transposed view W.t()):
  // dW = g.t().mm(a) [out, in], db = g summed over the batch (sum_to), da = g.mm(W); for
  // in-place ReLU, threshold_backward(g, relu output, 0). The input x needs no gradient.
  auto param_grad = [&](size_t i, auto&& compute) {
    // Buffers are made on first use, on the device the parameters have by then.
    auto buffer = [&](torch::Tensor& b) -> torch::Tensor& {
      if (!b.defined() || b.device() != params_[i].device()) {
        b = torch::empty(params_[i].sizes(), params_[i].options());
      }
      return b;
    };
    torch::Tensor& grad = params_[i].mutable_grad();
    if (!grad.defined()) {
      compute(buffer(grads_[i]));
      grad = grads_[i];
    } else {
      compute(buffer(scratch_[i]));
      grad += scratch_[i];  // AccumulateGrad's in-place sum
    }
  };
  const torch::Tensor& g3 = grad_logits;  // [B, C]
  param_grad(4, [&](torch::Tensor& out) { at::mm_out(out, g3.t(), h2_); });
  param_grad(5, [&](torch::Tensor& out) { at::sum_out(out, g3, {0}); });
  at::threshold_backward_out(g2_, at::mm_out(g2_, g3, params_[4]), h2_, 0);  // [B, H2]
  param_grad(2, [&](torch::Tensor& out) { at::mm_out(out, g2_.t(), h1_); });
  param_grad(3, [&](torch::Tensor& out) { at::sum_out(out, g2_, {0}); });
  at::threshold_backward_out(g1_, at::mm_out(g1_, g2_, params_[2]), h1_, 0);  // [B, H1]
  param_grad(0, [&](torch::Tensor& out) { at::mm_out(out, g1_.t(), x_); });
  param_grad(1, [&](torch::Tensor& out) { at::sum_out(out, g1_, {0}); });
}

}  // namespace ctrain::models
