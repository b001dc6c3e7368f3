// Fault tests: real processes, real signals, real files. Each test is one fault that ctrain
// must survive; `make test-faults` prints one line per test.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "../support/fixtures.h"
#include "core/fs.h"
#include "engine/checkpoint.h"
#include "models/mlp.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

class FaultTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  static std::string mnist(const std::string& args) {
    return mnist_on_data("--batch-size 32 --learning-rate 0.05 --momentum 0.5 --no-onnx " + args);
  }
  static std::string launch(const std::string& rest) {
    return ctrain::testing::launch_cmd(2, "--stop-grace 2 " + rest);
  }
  static void expect_same(const std::string& a, const std::string& b) {
    const auto pa = ctrain::testing::mlp_params(a), pb = ctrain::testing::mlp_params(b);
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "param " << i;
  }
};

TEST_F(FaultTest, KilledRankMidEpochIsRestartedAndEndsIdentical) {
  auto r = run_command(launch(mnist("--epochs 3 --output-dir " + (out_ / "ref"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Rank 1 SIGKILLs itself at step 5 of epoch 1; the launcher restarts the group, which
  // resumes from epoch 0's checkpoint.
  r = run_command("CTRAIN_FAULT_AT=kill:1:5:1 " +
                  launch("--max-restarts 1 " + mnist("--epochs 3 --output-dir " + (out_ / "run"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("exited with code 137"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  expect_same(out_ / "ref/model.pt", out_ / "run/model.pt");
}

TEST_F(FaultTest, WriterKilledMidCheckpointLeavesThePreviousOne) {
  auto r = run_command(mnist("--epochs 1 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The next run dies (SIGKILL) halfway through writing epoch 1's checkpoint.
  r = run_command("CTRAIN_FAULT_ABORT_WRITE_AT=0.5 " + mnist("--epochs 2 --resume --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 137) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o/checkpoints/epoch-0001.pt"));
  // The torn temp file is ignored; the resume uses epoch 0 and finishes.
  r = run_command(mnist("--epochs 2 --resume --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("epoch 0 done"), std::string::npos) << r.output;
  r = run_command(mnist("--epochs 2 --output-dir " + (out_ / "ref")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_same(out_ / "ref/model.pt", out_ / "o/model.pt");
}

TEST_F(FaultTest, CorruptCheckpointIsDetectedAndSkipped) {
  auto r = run_command(mnist("--epochs 2 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string newest = out_ / "o/checkpoints/epoch-0001.pt";
  std::string bytes = ctrain::read_file(newest);
  bytes[bytes.size() / 3] ^= 0x40;
  ctrain::write_file_atomic(newest, bytes);
  r = run_command(mnist("--epochs 2 --resume-from " + newest + " --output-dir " + (out_ / "o2")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("checksum mismatch"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch-0001.pt"), std::string::npos) << r.output;
  r = run_command(mnist("--epochs 3 --resume --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("skipping unreadable checkpoint"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 0 done"), std::string::npos) << r.output;
  // Truncated: also detected.
  ctrain::write_file_atomic(newest, bytes.substr(0, bytes.size() / 2));
  r = run_command(mnist("--epochs 2 --resume-from " + newest + " --output-dir " + (out_ / "o3")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
}

TEST_F(FaultTest, HungRankMakesTheJobFailWithinTheTimeout) {
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 1 SIGSTOPs itself mid-epoch: rank 0 must time out (3 s) naming the collective, and
  // the launcher must stop the group (SIGKILL after the grace period) and exit non-zero.
  const auto r = run_command("CTRAIN_FAULT_AT=stop:0:3:1 " +
                             launch(mnist("--epochs 2 --dist-timeout 3 --output-dir " + (out_ / "o"))));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("allreduce of DDP bucket"), std::string::npos) << r.output;
  EXPECT_LT(secs, 45) << r.output;
}

TEST_F(FaultTest, UnwritableOutputIsRefusedBeforeTraining) {
  std::ofstream(out_ / "file") << "x";
  const auto r = run_command(mnist("--epochs 1 --output-dir " + (out_ / "file/sub")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("file/sub"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Training accuracy"), std::string::npos) << r.output;
}

TEST_F(FaultTest, NonFiniteLossStopsNamingTheStepOrIsSkipped) {
  auto r = run_command(mnist("--epochs 2 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string good = ctrain::read_file(out_ / "o/model.pt");
  r = run_command("CTRAIN_FAULT_AT=nan:2:4 " + mnist("--epochs 3 --resume --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("epoch 2, step 4 of 16"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o/checkpoints/epoch-0002.pt"));
  EXPECT_EQ(ctrain::read_file(out_ / "o/model.pt"), good);  // no NaN written over a good model
  r = run_command("CTRAIN_FAULT_AT=nan:2:4 " +
                  launch(mnist("--epochs 3 --resume --on-nan skip --output-dir " + (out_ / "o"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("skipped 1 step(s)"), std::string::npos) << r.output;
  for (const auto& p : ctrain::testing::mlp_params(out_ / "o/model.pt")) EXPECT_TRUE(p.isfinite().all().item<bool>());
}

TEST_F(FaultTest, ResumeWithADifferentWorldSizeReshards) {
  auto r = run_command(launch(mnist("--epochs 1 --output-dir " + (out_ / "o"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(mnist("--epochs 2 --batch-size 64 --resume --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 -- Training accuracy"), std::string::npos) << r.output;
}

}  // namespace
