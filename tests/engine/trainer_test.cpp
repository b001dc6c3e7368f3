#include "engine/trainer.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "../support/fixtures.h"
#include "apps/common/process_policy.h"
#include "core/error.h"
#include "data/idx.h"
#include "data/sampler.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace ctrain::engine {
namespace {

using ctrain::testing::TempDir;

// Everything one in-process training run needs, built the way ctrain-mnist builds it.
struct MnistRun {
  TrainConfig cfg;
  models::Mlp mlp{nullptr};
  Model model;
  std::unique_ptr<data::TensorBatchSource> train, val;
  std::vector<EpochStats> epochs;
  Runtime rt;

  MnistRun(const std::string& out, int64_t epochs_total, double lr = 0.05) {
    cfg.epochs = epochs_total;
    cfg.output_dir = out;
    cfg.device = "cpu";
    cfg.optim.learning_rate = lr;
    cfg.optim.momentum = 0.5;  // momentum state must survive a resume too
  }
  TrainResult go(const data::MnistData& d) {
    cfg.validate();
    rt = init_runtime(cfg, distributed::DistFlags{}, [](const std::string&) {
      return std::optional<std::string>();  // a single process whatever the environment
    });
    mlp = models::Mlp(models::MlpOptions{});
    models::ModelSpec spec;
    spec.arch = "mlp";
    model = Model{mlp.ptr(), [m = mlp](const torch::Tensor& x) mutable { return m->forward(x); }, spec, {}, {}};
    train = std::make_unique<data::TensorBatchSource>(
        d.train.images, d.train.labels, 32,
        data::ShardSampler(d.train.images.size(0), 0, 1, cfg.seed, true));
    val = std::make_unique<data::TensorBatchSource>(
        d.test.images, d.test.labels, 100,
        data::ShardSampler(d.test.images.size(0), 0, 1, cfg.seed, false));
    TrainHooks hooks;
    hooks.on_epoch = [this](const EpochStats& s) { epochs.push_back(s); };
    return ctrain::engine::train(cfg, rt, model, *train, *val, hooks);
  }
};

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new TempDir;
    ctrain::testing::write_synthetic_mnist(data_dir_->path().string(), 640, 200);
    data_ = new data::MnistData(data::load_mnist(data_dir_->path().string()));
  }
  static void TearDownTestSuite() {
    delete data_;
    delete data_dir_;
  }
  static TempDir* data_dir_;
  static data::MnistData* data_;
  TempDir out_;
};
TempDir* TrainerTest::data_dir_ = nullptr;
data::MnistData* TrainerTest::data_ = nullptr;

std::vector<torch::Tensor> load_model_params(const std::string& path) {
  models::Mlp m(models::MlpOptions{});
  checkpoint_load(path, *m, nullptr);
  return m->parameters();
}

TEST_F(TrainerTest, LearnsAndWritesOutputs) {
  MnistRun r(out_ / "o", 3);
  const TrainResult res = r.go(*data_);
  ASSERT_EQ(r.epochs.size(), 3u);
  EXPECT_LT(r.epochs[2].train_loss, r.epochs[0].train_loss);
  EXPECT_GT(res.final_val_acc, 0.9);  // 10 classes: chance is 0.1
  EXPECT_TRUE(std::filesystem::exists(out_ / "o/model.pt"));
  EXPECT_EQ(checkpoint_list(out_ / "o/checkpoints").size(), 3u);
  std::ifstream metrics(out_ / "o/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["epoch"], lines);
    for (const char* k : {"train_loss", "training_acc", "validation_acc", "seconds",
                          "samples_per_sec", "lr"}) {
      EXPECT_TRUE(j.contains(k)) << k;
    }
    // Where the epoch went: parts of the timed epoch (data + step + progress + sync within "seconds"),
    // the slowest of its 20 steps, and the evaluation and checkpoint after it.
    const auto& ph = j.at("phases");
    EXPECT_GT(ph.at("step_s").get<double>(), 0.0);
    EXPECT_GE(ph.at("data_s").get<double>(), 0.0);
    EXPECT_GE(ph.at("sync_s").get<double>(), 0.0);
    EXPECT_GE(ph.at("progress_s").get<double>(), 0.0);
    EXPECT_LE(ph["data_s"].get<double>() + ph["step_s"].get<double>() + ph["progress_s"].get<double>() +
                  ph["sync_s"].get<double>(),
              j["seconds"].get<double>());
    EXPECT_GE(ph.at("slowest_step").get<int64_t>(), 1);
    EXPECT_LE(ph["slowest_step"].get<int64_t>(), 20);
    EXPECT_GT(ph.at("slowest_step_s").get<double>(), 0.0);
    EXPECT_LE(ph["slowest_step_s"].get<double>(), ph["step_s"].get<double>());
    EXPECT_GT(ph.at("eval_s").get<double>(), 0.0);
    EXPECT_GT(ph.at("checkpoint_s").get<double>(), 0.0) << "a checkpoint is written after every epoch";
    ++lines;
  }
  EXPECT_EQ(lines, 3);
}

TEST_F(TrainerTest, TwoEpochsEqualOnePlusResumedOneBitForBit) {
  MnistRun full(out_ / "full", 2);
  full.go(*data_);
  MnistRun first(out_ / "split", 1);
  first.go(*data_);
  MnistRun second(out_ / "split", 2);
  second.cfg.checkpoint.resume = true;
  const TrainResult res = second.go(*data_);
  EXPECT_EQ(res.first_epoch, 1);
  EXPECT_EQ(res.epochs_run, 1);
  const auto a = load_model_params(out_ / "full/model.pt");
  const auto b = load_model_params(out_ / "split/model.pt");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "param " << i;
  ASSERT_EQ(second.epochs.size(), 1u);
  EXPECT_DOUBLE_EQ(second.epochs[0].train_loss, full.epochs[1].train_loss);
}

TEST_F(TrainerTest, DivergingLossStopsBeforeACheckpoint) {
  MnistRun r(out_ / "o", 2, /*lr=*/1e30);
  try {
    r.go(*data_);
    FAIL() << "expected the non-finite loss to stop training";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 0"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(checkpoint_list(out_ / "o/checkpoints").empty());
  EXPECT_FALSE(std::filesystem::exists(out_ / "o/model.pt"));
}

// After keep_freed_memory, a large tensor freed and allocated again reuses the process's memory:
// once the heap has grown to its steady size (a few rounds: glibc's aligned allocation leaves
// gaps at first), a round costs no new page faults. glibc would otherwise mmap and unmap it
// each time, faulting in all 16384 of its pages again, as happened every training step.
TEST(RuntimeTest, FreedLargeTensorsKeepTheirPages) {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    GTEST_SKIP() << "the user's malloc settings win over ctrain's";
  }
  apps::keep_freed_memory();  // what the trainers do first
  auto minor_faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
  };
  auto round = [] { torch::empty({64 << 20}, torch::kUInt8).fill_(1); };  // 64 MiB, touched
  for (int i = 0; i < 16; ++i) round();
  const long before = minor_faults();
  for (int i = 0; i < 4; ++i) round();
  EXPECT_LT(minor_faults() - before, 1000) << "64 MiB is 16384 pages: they were faulted in again";
}

TEST(TrainConfigTest, ValidateNamesTheFlag) {
  TrainConfig c;
  c.epochs = 0;
  try {
    c.validate();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--epochs"), std::string::npos);
  }
  c = TrainConfig{};
  c.device = "tpu";
  EXPECT_THROW(c.validate(), ConfigError);
  c = TrainConfig{};
  c.checkpoint.resume = true;
  c.checkpoint.resume_from = "x";
  EXPECT_THROW(c.validate(), ConfigError);
}

}  // namespace
}  // namespace ctrain::engine
