// ctrain-export: ONNX from a ctrain checkpoint, or straight from torchvision/timm weights.
//   ctrain-export --checkpoint outputs/model.pt --onnx outputs/model.onnx [--verify]
//   ctrain-export --arch resnet18 --weights resnet18.safetensors --num-classes 1000 --onnx out.onnx
#include <torch/torch.h>

#include <cstdio>

#include "apps/common/cli.h"
#include "apps/common/models.h"
#include "models/resnet.h"
#include "models/spec.h"
#include "models/weights.h"

namespace {

int run(int argc, char** argv) {
  std::string checkpoint, weights, arch, onnx_path;
  int64_t num_classes = 1000, image_size = 224;
  bool verify = false;
  double tolerance = 1e-4;
  CLI::App app{"ctrain-export: write a trained model as ONNX (input 'input', output 'logits')"};
  app.option_defaults()->always_capture_default();
  auto* ck = app.add_option("--checkpoint", checkpoint, "a ctrain model.pt or checkpoint");
  auto* wt = app.add_option("--weights", weights, ".safetensors with torchvision/timm names (needs --arch)");
  app.add_option("--arch", arch, "resnet18 | resnet34 | resnet50 (with --weights)");
  app.add_option("--num-classes,--num_classes", num_classes, "classes of the --weights head");
  app.add_option("--image-size,--image_size", image_size, "input height and width for ResNets");
  app.add_option("--onnx", onnx_path, "output .onnx file")->required();
  app.add_flag("--verify", verify, "compare an ONNX runtime's (OpenCV dnn) outputs with LibTorch's on random inputs (batch 1 and 8)");
  app.add_option("--tolerance", tolerance, "max abs difference --verify accepts");
  ck->excludes(wt);
  if (int code = ctrain::apps::parse_or_exit(app, argc, argv); code >= 0) return code;
  // The ranges a checkpoint's spec is held to (models/spec.h).
  if (num_classes < 1 || num_classes > ctrain::models::kMaxClasses) {
    throw ctrain::ConfigError("--num-classes must be in 1.." + std::to_string(ctrain::models::kMaxClasses));
  }
  if (image_size < ctrain::models::kMinImageSize || image_size > ctrain::models::kMaxImageSize) {
    throw ctrain::ConfigError("--image-size must be in " + std::to_string(ctrain::models::kMinImageSize) + ".." +
                              std::to_string(ctrain::models::kMaxImageSize));
  }
  if (!(tolerance > 0 && std::isfinite(tolerance))) {
    throw ctrain::ConfigError("--tolerance must be a positive number");
  }
  if (checkpoint.empty() == weights.empty()) {
    throw ctrain::ConfigError("pass exactly one of --checkpoint or --weights");
  }
  ctrain::engine::Model model;
  ctrain::models::ModelSpec spec;
  if (!checkpoint.empty()) {
    model = ctrain::apps::load_model(checkpoint);  // its spec validated
    spec = model.spec;
  } else {
    if (!ctrain::models::is_resnet_arch(arch)) {
      throw ctrain::ConfigError("--weights needs --arch resnet18, resnet34 or resnet50");
    }
    spec.arch = arch;  // ImageNet's mean and std, as torchvision/timm weights expect
    spec.num_classes = num_classes;
    spec.image_size = image_size;
    model = ctrain::models::build_model(spec);
    ctrain::models::import_weights(*model.module, ctrain::models::read_safetensors(weights), {}, weights);
  }
  model.module->eval();
  auto sample = [&](int64_t batch) {
    torch::manual_seed(0);
    std::vector<int64_t> shape = spec.input_shape();
    shape.insert(shape.begin(), batch);
    return spec.is_mlp() ? torch::rand(shape) : torch::randn(shape);
  };
  if (!verify) {
    torch::NoGradGuard no_grad;
    ctrain::exporter::export_onnx(*model.module, model.spec.to_json(), onnx_path);
    std::printf("wrote %s\n", onnx_path.c_str());
    return 0;
  }
  for (int64_t batch : {1, 8}) {
    const auto v = ctrain::apps::export_and_verify(model, onnx_path, sample(batch), tolerance);
    std::printf("batch %lld: %s\n", static_cast<long long>(batch),
                ctrain::apps::describe_verification(onnx_path, v).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ctrain::apps::guarded_main("ctrain-export", [&] { return run(argc, argv); });
}
