// ctrain-export: ONNX from a ctrain checkpoint, or straight from torchvision/timm weights.
//   ctrain-export --checkpoint outputs/model.pt --onnx outputs/model.onnx [--verify]
//   ctrain-export --arch resnet18 --weights resnet18.safetensors --num-classes 1000 --onnx out.onnx
#include <torch/torch.h>

#include <cstdio>

#include "apps/common/cli.h"
#include "apps/common/models.h"
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
  if (num_classes < 1) throw ctrain::ConfigError("--num-classes must be >= 1");
  if (image_size < 16) throw ctrain::ConfigError("--image-size must be at least 16");
  if (!(tolerance > 0 && std::isfinite(tolerance))) {
    throw ctrain::ConfigError("--tolerance must be a positive number");
  }
  if (checkpoint.empty() == weights.empty()) {
    throw ctrain::ConfigError("pass exactly one of --checkpoint or --weights");
  }
  ctrain::engine::Model model;
  if (!checkpoint.empty()) {
    model = ctrain::apps::load_model(checkpoint);
  } else {
    if (!ctrain::models::is_resnet_arch(arch)) {
      throw ctrain::ConfigError("--weights needs --arch resnet18, resnet34 or resnet50");
    }
    model = ctrain::apps::build_model({{"arch", arch}, {"num_classes", num_classes},
                                       {"image_size", image_size},
                                       {"mean", {0.485, 0.456, 0.406}}, {"std", {0.229, 0.224, 0.225}}});
    ctrain::models::import_weights(*model.module, ctrain::models::read_safetensors(weights), {}, weights);
  }
  model.module->eval();
  const bool mlp = model.spec.value("arch", "") == "mlp";
  auto sample = [&](int64_t batch) {
    torch::manual_seed(0);
    return mlp ? torch::rand({batch, model.spec.value("in_features", int64_t{784})})
               : torch::randn({batch, 3, model.spec.value("image_size", image_size),
                               model.spec.value("image_size", image_size)});
  };
  if (!verify) {
    torch::NoGradGuard no_grad;
    ctrain::exporter::export_onnx(*model.module, model.spec, onnx_path);
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
