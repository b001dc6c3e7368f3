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

}  // namespace ctrain::models
