#pragma once
// The model as the engine sees it, on its own: the training step, the serving handler and the
// apps' model factory need this and nothing of the training loop's distributed set-up.
#include <torch/torch.h>

#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

namespace ctrain::engine {

// A model as the engine sees it: parameters to optimise and save, a forward function
// (input batch -> logits), and a spec that says how to rebuild it (saved in every checkpoint).
struct Model {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  nlohmann::json spec;  // e.g. {"arch": "mlp", "in_features": 784, ...}
  // Optional gradients by hand (models::MlpManualGrad), both or neither: a training forward
  // that keeps what `backward` needs, and a backward from d(loss)/d(logits) that accumulates
  // into each parameter's .grad bitwise as autograd would. The training step then runs without
  // autograd, unless DDP's hooks or autocast need it.
  std::function<torch::Tensor(const torch::Tensor&)> train_forward;
  std::function<void(const torch::Tensor& grad_logits)> backward;
};

}  // namespace ctrain::engine
