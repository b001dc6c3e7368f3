#pragma once
// ResNet-18/34/50 with torchvision's module layout and parameter names (conv1.weight,
// layer1.0.bn1.running_mean, layer2.0.downsample.0.weight, fc.weight, ...), so that weights
// move between torchvision/timm and ctrain by name. Single-device code.
#include <torch/torch.h>

#include <string>

namespace ctrain::models {

struct ResNetOptions {
  std::string arch = "resnet18";  // resnet18 | resnet34 | resnet50
  int64_t num_classes = 1000;
};

class ResNetImpl : public torch::nn::Module {
 public:
  explicit ResNetImpl(const ResNetOptions& options);
  // x: [B, 3, H, W] normalised float -> logits [B, num_classes]
  torch::Tensor forward(const torch::Tensor& x);
  const ResNetOptions& options() const { return options_; }
  // Replaces the classifier with a freshly initialised one for `num_classes` (transfer
  // learning: the tutorial's new head).
  void reset_head(int64_t num_classes);
  // Freezes everything but fc (the tutorial's "fixed feature extractor").
  void freeze_backbone();

 private:
  ResNetOptions options_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr}, layer2_{nullptr}, layer3_{nullptr}, layer4_{nullptr};
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(ResNet);

// True for the architectures ResNetImpl builds.
bool is_resnet_arch(const std::string& arch);

}  // namespace ctrain::models
