// Part of hostile_test, one file per class of hostile input (README, Tests: hostile input).
// Files from outside (issue 26) against the programs and the file readers: devices and FIFOs
// where a file is expected, file names that are not UTF-8, torn metrics lines left by a killed
// writer, stray folders in the registry. Programs run under `timeout` and library calls in a
// bounded child (files_support.h), so a regression fails the test instead of hanging CI.
// files_test.cpp has the report, the sweep and the parameter space.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "engine/checkpoint.h"
#include "serve/registry.h"
#include "tests/hostile/files_support.h"
#include "tests/serve/serve_fixtures.h"
#include "tests/support/fixtures.h"
#include "tracking/jsonl.h"

namespace {

namespace fs = std::filesystem;
using namespace ctrain::testing;           // bin, run_command, read_text, TempDir
using namespace ctrain::testing::hostile;  // bounded, run_bounded, write_text, contains

TEST(HostileFilesRead, ReadFileRefusesDevicesFifosAndDirectoriesUnreadAndHonoursItsCap) {
  TempDir d;
  const std::string fifo = d / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_text(d / "ten", "0123456789");
  const Bounded r = bounded([&] {
    std::string out;
    for (const std::string p : {std::string("/dev/zero"), fifo, d.path().string()}) {
      try {
        ctrain::read_file(p);
        out += p + " was read; ";
      } catch (const ctrain::Error& e) {
        out += std::string(e.what()) + "; ";
      }
    }
    return out;
  }, 10, 256);
  ASSERT_TRUE(r.returned) << r.text;
  EXPECT_TRUE(contains(r.text, "/dev/zero is a character device, not a regular file")) << r.text;
  EXPECT_TRUE(contains(r.text, fifo + " is a FIFO, not a regular file")) << r.text;
  EXPECT_TRUE(contains(r.text, d.path().string() + " is a directory, not a regular file")) << r.text;
  EXPECT_EQ(ctrain::read_file(d / "ten", 10), "0123456789");
  EXPECT_THROW(ctrain::read_file(d / "ten", 9), ctrain::Error);
  EXPECT_THROW(ctrain::require_regular_file(fifo, "--resume-from"), ctrain::Error);
}

TEST(HostileFilesRead, CheckpointReadersRefuseAFifoWithoutBlocking) {
  TempDir d;
  const std::string fifo = d / "model.pt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const Bounded r = bounded([&] {
    std::string out = ctrain::engine::is_checkpoint_file(fifo) ? "magic; " : "not a checkpoint; ";
    try {
      ctrain::engine::checkpoint_peek(fifo);
    } catch (const ctrain::Error& e) {
      out += e.what();
    }
    return out;
  }, 10, 256);
  ASSERT_TRUE(r.returned) << r.text;
  EXPECT_TRUE(contains(r.text, "not a checkpoint; " + fifo + " is a FIFO")) << r.text;
}

// The shared synthetic MNIST folder for the trainer runs below.
class HostileFilesTrainer : public ctrain::testing::SyntheticMnistSuite {
 protected:
  static std::string mnist(const std::string& args) { return mnist_on_data("--threads 1 --no-onnx " + args); }
};

TEST_F(HostileFilesTrainer, AFifoAsResumeFromIsRefusedNamingTheFlag) {
  const std::string fifo = out_ / "ckpt.pt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto r = run_bounded(mnist("--epochs 1 --output-dir " + out_ / "o" + " --resume-from " + fifo), 60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.exit_code, 124) << "it must not block until killed: " << r.output;
  EXPECT_TRUE(contains(r.output, "--resume-from " + fifo + " is a FIFO, not a regular file")) << r.output;
}

// ---- (16) a torn last metrics line and --resume ----------------------------------------------

TEST(HostileFilesResume, DropTornLastLineCutsOnlyAnUnterminatedTail) {
  TempDir d;
  write_text(d / "a", "{\"a\":1}\n{\"a\":2}\n{\"a\":");
  EXPECT_EQ(ctrain::drop_torn_last_line(d / "a"), 5u);
  EXPECT_EQ(read_text(d / "a"), "{\"a\":1}\n{\"a\":2}\n");
  EXPECT_EQ(ctrain::drop_torn_last_line(d / "a"), 0u);
  write_text(d / "b", std::string(10000, 'x'));  // no newline at all: longer than one read block
  EXPECT_EQ(ctrain::drop_torn_last_line(d / "b"), 10000u);
  EXPECT_EQ(read_text(d / "b"), "");
  EXPECT_EQ(ctrain::drop_torn_last_line(d / "none"), 0u);
}

TEST_F(HostileFilesTrainer, ResumeDropsATornMetricsLineBeforeAppending) {
  const std::string out = out_ / "o";
  auto r = run_bounded(mnist("--epochs 1 --output-dir " + out), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ofstream(out + "/metrics.jsonl", std::ios::app) << "{\"epoch\":7,\"valid";  // killed mid-append
  r = run_bounded(mnist("--epochs 2 --resume --output-dir " + out), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "dropped a torn last line")) << r.output;
  std::vector<nlohmann::json> lines;
  ASSERT_NO_THROW(lines = ctrain::tracking::read_jsonl(out + "/metrics.jsonl")) << read_text(out + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["epoch"], 1);
  // The registry records the run's final line, not null.
  ctrain::serve::Registry reg(out_ / "models");
  const auto v = reg.register_model("m", out + "/model.pt");
  EXPECT_EQ(v.metadata["metrics"]["epoch"], 1) << v.metadata["metrics"];
}

// ---- (13, 18) ctrain-score: names that are not UTF-8, devices and FIFOs ------------------------

class HostileFilesScore : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    model_ = ctrain::testing::write_mlp_model(*dir_ / "run");
    const cv::Mat img(28, 28, CV_8UC1, cv::Scalar(90));
    fs::create_directories(*dir_ / "imgs");
    cv::imwrite(*dir_ / "imgs/a.png", img);
    cv::imwrite(*dir_ / "imgs/caf\xE9.png", img);  // a Latin-1 name
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string score(const std::string& inputs) {
    return bin("ctrain-score") + " --threads 1 --model " + model_ + " " + inputs;
  }
  static inline TempDir* dir_ = nullptr;
  static inline std::string model_;
};

TEST_F(HostileFilesScore, AFolderWithANonUtf8NameIsScoredWhole) {
  const auto r = run_bounded(score(*dir_ / "imgs") + " 2>/dev/null", 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int lines = 0;
  bool latin1_shown = false;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);  // every line is valid JSON (UTF-8)
    ++lines;
    latin1_shown = latin1_shown || contains(j["file"].get<std::string>(), "caf\xEF\xBF\xBD.png");
  }
  EXPECT_EQ(lines, 2) << r.output;
  EXPECT_TRUE(latin1_shown) << r.output;
}

TEST_F(HostileFilesScore, DevicesAndFifosAreRefusedUnreadAndTheRestScored) {
  const std::string fifo = *dir_ / "fifo.png";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto r = run_bounded(score("/dev/zero " + fifo + " " + *dir_ / "imgs/a.png"), 60);
  EXPECT_EQ(r.exit_code, 1) << "two inputs could not be scored: " << r.output;
  EXPECT_TRUE(contains(r.output, "/dev/zero is a character device, not a regular file")) << r.output;
  EXPECT_TRUE(contains(r.output, fifo + " is a FIFO, not a regular file")) << r.output;
  EXPECT_TRUE(contains(r.output, "{\"file\":\"" + *dir_ / "imgs/a.png" + "\"")) << r.output;
  ::unlink(fifo.c_str());
}

// ---- (18) the registry: tags and stray folders -----------------------------------------------

TEST(HostileFilesRegistry, ANonUtf8TagIsRefusedBeforeAVersionIsClaimed) {
  TempDir d;
  const std::string model = ctrain::testing::write_mlp_model(d / "run");
  ctrain::serve::Registry reg(d / "models");
  EXPECT_THROW(reg.register_model("m", model, {{"data", "caf\xE9"}}), ctrain::ConfigError);
  EXPECT_THROW(reg.register_model("m", model, {{"data", "two\nlines"}}), ctrain::ConfigError);
  EXPECT_EQ(reg.register_model("m", model, {{"data", "caf\xC3\xA9"}}).version, 1) << "no version was burnt";
  const auto r = run_bounded(bin("ctrain-registry") + " --registry " + d / "models" + " register m " + model +
                             " --tag $(printf 'k=\\377')", 60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--tag")) << r.output;
  EXPECT_EQ(reg.register_model("m", model).version, 2);
}

TEST(HostileFilesRegistry, StrayNumericFoldersAreNotVersions) {
  TempDir d;
  const std::string model = ctrain::testing::write_mlp_model(d / "run");
  for (const char* stray : {"99999999999999999999", "12abc", "007", "0"}) fs::create_directories(d.path() / "models/foo" / stray);
  ctrain::serve::Registry reg(d / "models");
  EXPECT_EQ(reg.register_model("foo", model).version, 1);
  const auto all = reg.list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].version, 1);
  EXPECT_EQ(reg.resolve(ctrain::serve::parse_model_ref("foo:latest")).version, 1);
  const auto r = run_bounded(bin("ctrain-registry") + " --registry " + d / "models" + " list", 60);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
