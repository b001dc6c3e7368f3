#include "models/model.h"

#include "core/error.h"
#include "models/mlp.h"
#include "models/resnet.h"

namespace ctrain::models {

Model build_model(const ModelSpec& spec) {
  if (spec.is_mlp()) {
    MlpOptions o;
    o.in_features = spec.in_features;
    o.hidden1 = spec.hidden1;
    o.hidden2 = spec.hidden2;
    o.num_classes = spec.num_classes;
    Mlp m(o);
    Model model{m.ptr(), [m](const torch::Tensor& x) mutable { return m->forward(x); }, spec, {}, {}};
    auto manual = std::make_shared<MlpManualGrad>(m);
    model.train_forward = [manual](const torch::Tensor& x) { return manual->forward(x); };
    model.backward = [manual](const torch::Tensor& g) { manual->backward(g); };
    return model;
  }
  if (is_resnet_arch(spec.arch)) {
    ResNet m(ResNetOptions{spec.arch, spec.num_classes});
    return {m.ptr(), [m](const torch::Tensor& x) mutable { return m->forward(x); }, spec, {}, {}};
  }
  throw Error("unknown model architecture '" + spec.arch + "' in the model spec");
}

}  // namespace ctrain::models
