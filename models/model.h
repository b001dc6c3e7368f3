#pragma once
// A model as the rest of ctrain sees it: parameters to optimise and save, a forward function
// (input batch -> logits), and the validated spec that says how to rebuild it (saved in every
// checkpoint as spec.to_json()). Single-device code: nothing here knows DDP.
#include <torch/torch.h>

#include <functional>
#include <memory>

#include "models/spec.h"

namespace ctrain::models {

struct Model {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  ModelSpec spec;
  // Optional gradients by hand (models::MlpManualGrad), both or neither: a training forward
  // that keeps what `backward` needs, and a backward from d(loss)/d(logits) that accumulates
  // into each parameter's .grad bitwise as autograd would. The training step then runs without
  // autograd, unless DDP's hooks or autocast need it.
  std::function<torch::Tensor(const torch::Tensor&)> train_forward;
  std::function<void(const torch::Tensor& grad_logits)> backward;
};

// A freshly initialised model of `spec` (from the global RNG, as PyTorch's constructors): the
// MLP with its hand-written gradients, or a ResNet of spec.arch. Throws ctrain::Error for an
// architecture it does not know. The one model factory: trainers, exporter, serving and scoring.
Model build_model(const ModelSpec& spec);

}  // namespace ctrain::models
