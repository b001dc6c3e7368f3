#pragma once
// Trained-model files for the serving tests (seeded, untrained weights: the tests compare the
// service with LibTorch, not with ground truth), and a ctrain-serve process on a free port.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <signal.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>

#include "apps/common/models.h"
#include "models/mlp.h"
#include "models/resnet.h"
#include "engine/checkpoint.h"
#include "tests/support/fixtures.h"

namespace ctrain::testing {

// dir/model.pt of the MNIST DNN (784-256-128-10), a metrics.jsonl beside it.
inline std::string write_mlp_model(const std::string& dir, uint64_t seed = 1) {
  fs::create_directories(dir);
  torch::manual_seed(seed);
  models::Mlp m(models::MlpOptions{});
  engine::CheckpointMeta meta;
  meta.epoch = 2;
  meta.best_val_acc = 0.8123;
  meta.spec = {{"arch", "mlp"}, {"in_features", 784}, {"hidden1", 256}, {"hidden2", 128}, {"num_classes", 10}};
  meta.config = {{"epochs", 3}, {"seed", seed}};
  engine::checkpoint_save(dir + "/model.pt", *m, nullptr, meta);
  std::ofstream(dir + "/metrics.jsonl") << R"({"epoch":0,"validation_acc":0.7})" << "\n"
                                        << R"({"epoch":1,"validation_acc":0.8123})" << "\n";
  return dir + "/model.pt";
}

// dir/model.pt of the birds classifier: ResNet-18, 2 classes, a 64-pixel input to keep CPU
// forwards short (the transform is the same at any size).
inline std::string write_birds_model(const std::string& dir, uint64_t seed = 2) {
  fs::create_directories(dir);
  torch::manual_seed(seed);
  models::ResNet m(models::ResNetOptions{"resnet18", 2});
  engine::CheckpointMeta meta;
  meta.spec = {{"arch", "resnet18"}, {"num_classes", 2}, {"classes", {"chicken", "turkey"}}, {"image_size", 64},
               {"mean", {0.485, 0.456, 0.406}}, {"std", {0.229, 0.224, 0.225}}};
  engine::checkpoint_save(dir + "/model.pt", *m, nullptr, meta);
  return dir + "/model.pt";
}

// LibTorch's own answer: softmax(model(rows)), the model loaded from `path`.
inline torch::Tensor reference_probabilities(const std::string& path, const torch::Tensor& rows) {
  engine::Model model = apps::load_model(path);
  model.module->eval();
  torch::NoGradGuard no_grad;
  return torch::softmax(model.forward(rows), 1);
}

// ctrain-serve on a free port (--port 0, read back from its ready line); SIGTERM and reaped
// when the object goes.
class ServeProcess {
 public:
  ServeProcess(const std::string& args, const std::string& log) : log_(log) {
    pid_ = spawn_command(bin("ctrain-serve") + " --port 0 " + args, log);
    const std::regex ready("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    std::smatch m;
    poll_until([&] {
      const std::string text = read_text(log_);
      if (std::regex_search(text, m, ready)) port_ = std::stoi(m[1]);
      return port_ > 0 || ::waitpid(pid_, nullptr, WNOHANG) != 0;
    }, 120);
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      wait_exit(pid_);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // SIGTERM, then the exit code.
  int stop() {
    ::kill(pid_, SIGTERM);
    const int code = wait_exit(pid_);
    pid_ = -1;
    return code;
  }
  std::string log() const { return read_text(log_); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60);
    return c;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// {"data": rows} for POST /score.
inline std::string json_body(const torch::Tensor& rows) {
  const auto r = rows.contiguous();
  nlohmann::json data = nlohmann::json::array();
  const float* p = r.data_ptr<float>();
  for (int64_t i = 0; i < r.size(0); ++i) data.push_back(std::vector<float>(p + i * r.size(1), p + (i + 1) * r.size(1)));
  return nlohmann::json({{"data", data}}).dump();
}

}  // namespace ctrain::testing
