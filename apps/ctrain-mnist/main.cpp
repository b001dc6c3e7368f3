// ctrain-mnist: the MNIST DNN sample (784 -> 256 -> 128 -> 10, SGD, batch 64) as a native
// binary, alone or as one rank of a data-parallel job. Wiring only: flags -> config ->
// data + model -> engine::train().
#include <torch/torch.h>

#include <cstdio>

#include "apps/common/cli.h"
#include "apps/common/models.h"
#include "apps/common/test_faults.h"
#include "apps/common/process_policy.h"
#include "data/idx.h"
#include "data/sampler.h"
#include "engine/trainer.h"
#include "models/mlp.h"

namespace {

struct MnistArgs {
  std::string data_folder;
  int64_t batch_size = 64;
  int64_t hidden1 = 256;
  int64_t hidden2 = 128;
  int64_t eval_batch_size = 1000;
};

int run(int argc, char** argv) {
  ctrain::engine::TrainConfig cfg;
  cfg.epochs = 20;
  cfg.optim.learning_rate = 0.01;
  ctrain::distributed::DistFlags dist;
  MnistArgs a;

  CLI::App app{"ctrain-mnist: train the MNIST DNN (784-256-128-10 ReLU MLP, SGD)"};
  // A repeated flag takes its last value, as argparse does in the reference scripts.
  app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--data-folder,--data_folder", a.data_folder,
                 "folder with the four MNIST IDX files (raw or .gz)")->required();
  app.add_option("--batch-size,--batch_size", a.batch_size, "mini-batch size per process");
  app.add_option("--first-layer-neurons,--first_layer_neurons", a.hidden1, "first hidden layer");
  app.add_option("--second-layer-neurons,--second_layer_neurons", a.hidden2, "second hidden layer");
  app.add_option("--learning-rate,--learning_rate", cfg.optim.learning_rate, "SGD learning rate");
  app.add_option("--epochs,--num-epochs,--num_epochs", cfg.epochs, "total epochs");
  app.add_option("--eval-batch-size,--eval_batch_size", a.eval_batch_size, "batch size for evaluation");
  bool no_onnx = false;
  if (int code = ctrain::apps::add_common_flags_and_parse(app, cfg, dist, no_onnx, argc, argv); code >= 0) {
    return code;
  }
  if (a.batch_size <= 0) throw ctrain::ConfigError("--batch-size must be positive");
  if (a.eval_batch_size <= 0) throw ctrain::ConfigError("--eval-batch-size must be positive");

  // Data first: a bad --data-folder fails before anything in --output-dir is touched.
  const ctrain::data::MnistData mnist = ctrain::data::load_mnist(a.data_folder);
  ctrain::engine::Runtime rt = ctrain::engine::init_runtime(cfg, dist);
  const int64_t rank = rt.launch.rank, world = rt.launch.world_size;

  ctrain::models::ModelSpec spec;
  spec.arch = "mlp";
  spec.in_features = mnist.rows * mnist.cols;
  spec.hidden1 = a.hidden1;
  spec.hidden2 = a.hidden2;
  spec.num_classes = ctrain::data::kMnistClasses;
  ctrain::engine::Model model = ctrain::models::build_model(spec);  // with the MLP's own gradients

  // --batch-size is per process: the global batch is world_size x batch size. On a GPU the
  // whole dataset lives there (Fashion-MNIST: 220 MB), and batches are gathered on it.
  ctrain::data::TensorBatchSource train_data(
      mnist.train.images, mnist.train.labels, a.batch_size,
      ctrain::data::ShardSampler(mnist.train.images.size(0), rank, world, cfg.seed, /*shuffle=*/true), rt.device);
  ctrain::data::TensorBatchSource val_data(
      mnist.test.images, mnist.test.labels, a.eval_batch_size,
      ctrain::data::ShardSampler(mnist.test.images.size(0), rank, world, cfg.seed,
                                 /*shuffle=*/false, /*pad=*/false), rt.device);

  ctrain::engine::TrainHooks hooks;
  ctrain::apps::install_test_faults(hooks, rt);
  hooks.app_config = {{"data_folder", a.data_folder}, {"batch_size", a.batch_size}};
  hooks.on_epoch = [](const ctrain::engine::EpochStats& s) {
    std::printf("%lld -- Training accuracy: %.4f Validation accuracy: %.4f  (loss %.4f, %.1fs, %.0f samples/s)\n",
                static_cast<long long>(s.epoch), s.train_acc, s.val.acc, s.train_loss, s.seconds,
                s.samples_per_sec);
    std::fflush(stdout);
  };
  if (rt.is_rank0()) {
    std::printf("ctrain-mnist: %lld train / %lld test images of %lldx%lld from %s, device %s, %d threads\n",
                static_cast<long long>(mnist.train.images.size(0)),
                static_cast<long long>(mnist.test.images.size(0)), static_cast<long long>(mnist.rows),
                static_cast<long long>(mnist.cols), a.data_folder.c_str(), rt.device.str().c_str(),
                torch::get_num_threads());
    if (rt.launch.is_distributed()) {
      std::printf("distributed: %s, global batch %lld, %s\n", rt.launch.describe().c_str(),
                  static_cast<long long>(a.batch_size * world * cfg.dist.accumulate),
                  rt.pg ? rt.pg->transport().c_str() : "");
    }
    std::fflush(stdout);
  }
  const auto r = ctrain::engine::train(cfg, rt, model, train_data, val_data, hooks);
  if (rt.is_rank0()) {
    std::printf("final_acc: %.4f\n", r.final_val_acc);
    std::printf("Training time: %.1fs (%lld epochs run, model at %s/model.pt)\n", r.seconds,
                static_cast<long long>(r.epochs_run), cfg.output_dir.c_str());
    // The exported model is checked against LibTorch on real test images.
    if (!no_onnx) ctrain::apps::export_final_model(model, cfg.output_dir, mnist.test.images.slice(0, 0, 8));
    ctrain::apps::write_run_report(cfg.output_dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Process-wide policy, set here rather than by a library: freed memory stays for the next
  // step, and SIGTERM stops at the next step boundary.
  ctrain::apps::keep_freed_memory();
  ctrain::install_stop_handlers();
  return ctrain::apps::guarded_main("ctrain-mnist", [&] { return run(argc, argv); });
}
