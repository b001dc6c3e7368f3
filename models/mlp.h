#pragma once
// The MNIST DNN of the classic sample: in -> hidden1 -> hidden2 -> classes, ReLU, logits out
// (softmax only at inference). Single-device code: parallelism is applied from outside.
#include <torch/torch.h>

namespace ctrain::models {

struct MlpOptions {
  int64_t in_features = 784;
  int64_t hidden1 = 256;  // --first-layer-neurons
  int64_t hidden2 = 128;  // --second-layer-neurons
  int64_t num_classes = 10;
};

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const MlpOptions& options);
  // x: [B, in_features] float -> logits [B, num_classes]
  torch::Tensor forward(const torch::Tensor& x);
  const MlpOptions& options() const { return options_; }

 private:
  MlpOptions options_;
  // LibTorch default (Kaiming-uniform) init, as nn.Linear in PyTorch.
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, fc3_{nullptr};
};
TORCH_MODULE(Mlp);

// The MLP's training forward and backward written out by hand, without autograd: the fast path
// of the training step (engine::Model::backward). On 2 cores, autograd's per-step graph, its
// allocations and .grad bookkeeping cost about a tenth of an MNIST epoch (benchmarks/RESULTS.md).
// It calls the ATen kernels autograd calls for Linear (addmm) and in-place ReLU, in its order and
// on tensors of the same layouts, so the gradients are bitwise those of loss.backward()
// (tests/models/mlp_test.cpp). Activations and gradients live in buffers that are reused while
// the batch size stays the same. Not thread-safe; one per model.
class MlpManualGrad {
 public:
  explicit MlpManualGrad(Mlp mlp);
  // x: [B, in_features] float -> logits [B, num_classes], keeping the activations that
  // backward() needs. Records no autograd graph. The logits live in a buffer of this object:
  // valid until the next forward().
  torch::Tensor forward(const torch::Tensor& x);
  // grad_logits: [B, num_classes], d(loss)/d(logits) of the last forward(). Accumulates each
  // parameter's gradient into its .grad as loss.backward() does: sets an undefined .grad,
  // adds to a defined one.
  void backward(const torch::Tensor& grad_logits);

 private:
  Mlp mlp_;
  std::vector<torch::Tensor> params_;  // fc1.weight, fc1.bias, fc2.weight, ... fc3.bias
  torch::Tensor x_, h1_, h2_, logits_;  // the last forward's input and activations
  torch::Tensor g2_, g1_;               // d(loss)/d(h2), d(loss)/d(h1)
  std::vector<torch::Tensor> grads_;    // gradient buffers, one per parameter
  std::vector<torch::Tensor> scratch_;  // for adding to a defined .grad
};

}  // namespace ctrain::models
