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

}  // namespace ctrain::models
