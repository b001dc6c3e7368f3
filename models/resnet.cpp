#include "models/resnet.h"

#include "core/error.h"

namespace ctrain::models {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}

// torchvision's BasicBlock (ResNet-18/34): two 3x3 convs, expansion 1.
class BasicBlockImpl : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride) {
    conv1_ = register_module("conv1", conv(in, planes, 3, stride, 1));
    bn1_ = register_module("bn1", nn::BatchNorm2d(planes));
    conv2_ = register_module("conv2", conv(planes, planes, 3, 1, 1));
    bn2_ = register_module("bn2", nn::BatchNorm2d(planes));
    if (stride != 1 || in != planes) {
      downsample_ = register_module(
          "downsample", nn::Sequential(conv(in, planes, 1, stride, 0), nn::BatchNorm2d(planes)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = bn2_(conv2_(out));
    out += downsample_ ? downsample_->forward(x) : x;
    return torch::relu(out);
  }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck (ResNet-50): 1x1, 3x3 (stride here, "ResNet v1.5"), 1x1 x4.
class BottleneckImpl : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride) {
    conv1_ = register_module("conv1", conv(in, planes, 1, 1, 0));
    bn1_ = register_module("bn1", nn::BatchNorm2d(planes));
    conv2_ = register_module("conv2", conv(planes, planes, 3, stride, 1));
    bn2_ = register_module("bn2", nn::BatchNorm2d(planes));
    conv3_ = register_module("conv3", conv(planes, planes * kExpansion, 1, 1, 0));
    bn3_ = register_module("bn3", nn::BatchNorm2d(planes * kExpansion));
    if (stride != 1 || in != planes * kExpansion) {
      downsample_ = register_module(
          "downsample", nn::Sequential(conv(in, planes * kExpansion, 1, stride, 0),
                                       nn::BatchNorm2d(planes * kExpansion)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = torch::relu(bn2_(conv2_(out)));
    out = bn3_(conv3_(out));
    out += downsample_ ? downsample_->forward(x) : x;
    return torch::relu(out);
  }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

template <typename Block>
nn::Sequential make_layer(int64_t* in, int64_t planes, int64_t blocks, int64_t stride) {
  nn::Sequential layer;
  for (int64_t i = 0; i < blocks; ++i) {
    layer->push_back(Block(*in, planes, i == 0 ? stride : 1));
    *in = planes * Block::Impl::kExpansion;
  }
  return layer;
}

}  // namespace

bool is_resnet_arch(const std::string& arch) {
  return arch == "resnet18" || arch == "resnet34" || arch == "resnet50";
}

ResNetImpl::ResNetImpl(const ResNetOptions& o) : options_(o) {
  if (!is_resnet_arch(o.arch)) {
    throw ConfigError("--arch must be resnet18, resnet34 or resnet50, got '" + o.arch + "'");
  }
  if (o.num_classes < 1) throw ConfigError("a classifier needs at least one class");
  conv1_ = register_module("conv1", conv(3, 64, 7, 2, 3));
  bn1_ = register_module("bn1", nn::BatchNorm2d(64));
  const bool deep = o.arch == "resnet50";
  const std::vector<int64_t> blocks = o.arch == "resnet18" ? std::vector<int64_t>{2, 2, 2, 2}
                                                            : std::vector<int64_t>{3, 4, 6, 3};
  int64_t in = 64;
  auto layer = [&](int64_t planes, int64_t n, int64_t stride) {
    return deep ? make_layer<Bottleneck>(&in, planes, n, stride)
                : make_layer<BasicBlock>(&in, planes, n, stride);
  };
  layer1_ = register_module("layer1", layer(64, blocks[0], 1));
  layer2_ = register_module("layer2", layer(128, blocks[1], 2));
  layer3_ = register_module("layer3", layer(256, blocks[2], 2));
  layer4_ = register_module("layer4", layer(512, blocks[3], 2));
  fc_ = register_module("fc", nn::Linear(in, o.num_classes));
  // torchvision's init: Kaiming-normal (fan_out, relu) convs, BatchNorm weight 1 / bias 0.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* c = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* b = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(b->weight);
      nn::init::zeros_(b->bias);
    }
  }
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = torch::relu(bn1_(conv1_(x)));
  h = torch::max_pool2d(h, 3, 2, 1);
  h = layer4_->forward(layer3_->forward(layer2_->forward(layer1_->forward(h))));
  h = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
  return fc_(h);
}

void ResNetImpl::reset_head(int64_t num_classes) {
  if (num_classes < 1) throw ConfigError("a classifier needs at least one class");
  const auto device = fc_->weight.device();
  fc_ = replace_module("fc", nn::Linear(fc_->weight.size(1), num_classes));
  fc_->to(device);
  options_.num_classes = num_classes;
}

void ResNetImpl::freeze_backbone() {
  for (auto& p : named_parameters()) {
    if (p.key().rfind("fc.", 0) != 0) p.value().set_requires_grad(false);
  }
}

}  // namespace ctrain::models
