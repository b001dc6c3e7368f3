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
    // On the CPU (Gloo) wherever a GPU exists too: one GPU cannot hold two NCCL ranks.
    return mnist_on_data("--device cpu --batch-size 32 --learning-rate 0.05 --momentum 0.5 --no-onnx " + args);
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
  // Rank 1 SIGKILLs itself at step 5 of epoch 2; the launcher restarts the group, which
  // resumes from epoch 1's checkpoint (the newest) and trains only the last epoch.
  r = run_command("CTRAIN_FAULT_AT=kill:2:5:1 " +
                  launch("--max-restarts 1 " + mnist("--epochs 3 --output-dir " + (out_ / "run"))));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("exited with code 137"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("restarting the group"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 1 done"), std::string::npos) << r.output;
  expect_same(out_ / "ref/model.pt", out_ / "run/model.pt");
}

TEST_F(FaultTest, WriterKilledMidCheckpointLeavesThePreviousOne) {
  auto r = run_command(mnist("--epochs 1 --output-dir " + (out_ / "o")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string previous = ctrain::engine::checkpoint_path(out_ / "o/checkpoints", 0);
  const std::string before = ctrain::read_file(previous);
  // The next run dies (SIGKILL) halfway through writing epoch 1's checkpoint.
  r = run_command("CTRAIN_FAULT_ABORT_WRITE_AT=0.5 " + mnist("--epochs 2 --resume --output-dir " + (out_ / "o")));
  EXPECT_EQ(r.exit_code, 137) << r.output;
  EXPECT_FALSE(fs::exists(out_ / "o/checkpoints/epoch-0001.pt"));
  // The previous checkpoint is the old file byte for byte, and the only one listed.
  EXPECT_EQ(ctrain::read_file(previous), before);
  EXPECT_EQ(ctrain::engine::checkpoint_list(out_ / "o/checkpoints"), (std::vector<std::string>{previous}));
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
  // It fell back to epoch 0's checkpoint and trained epoch 1 again.
  EXPECT_NE(r.output.find("epoch 0 done"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 -- Training accuracy"), std::string::npos) << r.output;
  // Truncated: also detected.
  ctrain::write_file_atomic(newest, bytes.substr(0, bytes.size() / 2));
  r = run_command(mnist("--epochs 2 --resume-from " + newest + " --output-dir " + (out_ / "o3")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
}

TEST_F(FaultTest, HungRankMakesTheJobFailWithinTheTimeout) {
  // Rank 1 SIGSTOPs itself mid-epoch: rank 0 must time out (10 s) naming the collective and
  // exit 1, and the launcher must stop the group (SIGKILL after the grace period) and exit
  // with rank 0's code.
  // --dist-timeout also bounds the rendezvous, where a rank's start-up may lag the other's on a
  // loaded machine: rank 0's 10 s leaves rank 1 that much to join, and rank 1, whose own
  // timeout never runs out here (it is stopped), gets 120 s to wait for rank 0's store.
  const std::string rank_timeout = "--dist-timeout $(if [ \"$RANK\" = 0 ]; then echo 10; else echo 120; fi)";
  const auto r = run_command("CTRAIN_FAULT_AT=stop:0:3:1 " +
                             launch("sh -c 'exec " + mnist("--epochs 2 " + rank_timeout + " --output-dir " + (out_ / "o")) + "'"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("rank 0 exited with code 1"), std::string::npos) << r.output;
  // Rank 0 gave up at its own timeout, in the collective, and said so.
  EXPECT_NE(r.output.find("allreduce of DDP bucket"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("failed on rank 0 (timeout 10 s)"), std::string::npos) << r.output;
  // ... and named the rank it waited for, which never reported a failure of its own.
  EXPECT_NE(r.output.find("waited for rank 1 (host "), std::string::npos) << r.output;
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

// A real full disk: a small tmpfs mounted in a private mount namespace (unshare), so the test
// needs no privileges beyond what `unshare -m` (root) or `unshare -r -m` (user namespaces)
// gives, and nothing outside the test sees the mount. Skipped where neither is allowed.
class DiskFullFaultTest : public FaultTest {
 protected:
  void SetUp() override {
    for (const char* u : {"unshare -m", "unshare -r -m"}) {
      if (run_command(std::string(u) + " true").exit_code == 0) {
        unshare_ = u;
        break;
      }
    }
    if (unshare_.empty()) GTEST_SKIP() << "no mount namespaces here (unshare -m, unshare -r -m)";
    fs::create_directories(out_ / "disk");
  }
  // Runs `script` in a new mount namespace with a tmpfs of `size` on $D (= out_/disk).
  ctrain::testing::CommandResult on_small_disk(const std::string& size, const std::string& script) {
    const std::string file = out_ / "script.sh";
    std::ofstream(file) << "D=" << (out_ / "disk") << "\nT=" << out_.path().string()
                        << "\nmount -t tmpfs -o size=" << size << " tmpfs \"$D\" || exit 99\n"
                        << script;
    return run_command(unshare_ + " sh " + file);
  }
  std::string unshare_;
};

TEST_F(DiskFullFaultTest, TooSmallADiskIsRefusedBeforeTraining) {
  // The MLP's model.pt and first checkpoint need about 2.9 MB; the disk has 1 MB.
  const auto r = on_small_disk("1m", mnist("--epochs 1 --output-dir \"$D/o\"") + "; echo \"rc=$?\"\n");
  EXPECT_NE(r.output.find("rc=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("has 1.0 MB free, but model.pt and the first checkpoint need about"),
            std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Training accuracy"), std::string::npos) << r.output;
}

TEST_F(DiskFullFaultTest, DiskFillingUpMidRunLosesNothing) {
  // The run SIGSTOPs itself in epoch 1 (after epoch 0's checkpoint); the disk is then filled
  // to the last byte and the run continued: epoch 1's checkpoint cannot be written. The run
  // must stop naming the file, leave epoch 0's checkpoint intact and no temp file behind, and
  // a --resume once space is freed must end exactly where an uninterrupted run ends.
  const std::string run = mnist("--epochs 3 --output-dir \"$D/o\"");
  const auto r = on_small_disk("16m",
      "CTRAIN_FAULT_AT=stop:1:2 " + run + " > \"$T/run.log\" 2>&1 &\n"
      "pid=$!\n"
      "i=0; until [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" = T ]; do\n"
      "  if [ ! -d /proc/$pid ] || [ $i -ge 2400 ]; then echo 'poll failed: the run never stopped itself'; cat \"$T/run.log\"; exit 1; fi\n"
      "  sleep 0.05; i=$((i+1))\n"
      "done\n"
      "dd if=/dev/zero of=\"$D/filler\" bs=64k 2>/dev/null\n"
      "kill -CONT $pid; wait $pid; echo \"full rc=$?\"; cat \"$T/run.log\"\n"
      "cp -a \"$D/o\" \"$T/after\"\n"
      "rm \"$D/filler\"\n" +
      run + " --resume; echo \"resume rc=$?\"\n"
      "cp -a \"$D/o\" \"$T/final\"\n");
  ASSERT_EQ(r.output.find("poll failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("full rc=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch-0001.pt: No space left on device"), std::string::npos) << r.output;
  EXPECT_TRUE(ctrain::engine::is_checkpoint_file(out_ / "after/checkpoints/epoch-0000.pt")) << r.output;
  EXPECT_EQ(ctrain::engine::checkpoint_peek(out_ / "after/checkpoints/epoch-0000.pt").epoch, 0);
  EXPECT_FALSE(fs::exists(out_ / "after/checkpoints/epoch-0001.pt"));
  for (const auto& e : fs::recursive_directory_iterator(out_ / "after")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }
  EXPECT_NE(r.output.find("resume rc=0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  const auto ref = run_command(mnist("--epochs 3 --output-dir " + (out_ / "ref")));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  expect_same(out_ / "ref/model.pt", out_ / "final/model.pt");
}

// Processes started by hand with torchrun's variables on one rendezvous port.
class RendezvousFaultTest : public FaultTest {
 protected:
  void SetUp() override { port_ = std::to_string(ctrain::testing::free_port()); }
  // One rank's command; `tag` names its output directory and its line "<tag> rc=N", which
  // also goes to rc.log.
  std::string rank(int r, int world, const std::string& run_id, const std::string& tag) const {
    return "(RANK=" + std::to_string(r) + " WORLD_SIZE=" + std::to_string(world) +
           " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port_ + " TORCHELASTIC_RUN_ID=" + run_id + " " +
           mnist("--epochs 1 --dist-timeout 60 --output-dir " + (out_ / tag)) + "; echo \"" + tag +
           " rc=$?\" | tee -a " + (out_ / "rc.log") + ")";
  }
  static int count(const std::string& text, const std::string& what) {
    int n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }
  std::string port_;
};

TEST_F(RendezvousFaultTest, PeerOfAnotherJobIsRefusedByName) {
  // Rank 0 of job-a waits; a rank that believes in 3 ranks, then one of job-b, knock on its
  // port and are turned away; then job-a's real rank 1 joins and the job completes.
  const auto r = run_command(rank(0, 2, "job-a", "r0") + " & " + rank(1, 3, "job-a", "wrong-world") +
                             "; " + rank(1, 2, "job-b", "wrong-run") + "; " +
                             rank(1, 2, "job-a", "r1") + "; wait");
  EXPECT_NE(r.output.find("wrong-world rc=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("has world size 3, run id 'job-a', but the job whose rank 0 listens "
                          "there has world size 2, run id 'job-a'"),
            std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrong-run rc=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run id 'job-b'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("r1 rc=0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("r0 rc=0"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out_ / "r0/model.pt")) << r.output;
}

TEST_F(RendezvousFaultTest, SecondProcessClaimingARankIsRefused) {
  // Two processes both say RANK=1: whichever joins second is refused; the job still runs
  // with the first. Rank 2 starts only once a duplicate has left (or after 60 s), so the job
  // cannot finish before the second duplicate has knocked.
  const auto r = run_command(rank(0, 3, "job-a", "r0") + " & " + rank(1, 3, "job-a", "dup") + " & " +
                             rank(1, 3, "job-a", "dup") + " & i=0; until grep -q 'dup rc=' " + (out_ / "rc.log") +
                             " 2>/dev/null; do if [ $i -ge 600 ]; then echo 'poll failed: no duplicate left "
                             "within 60 s'; break; fi; sleep 0.1; i=$((i+1)); done; " +
                             rank(2, 3, "job-a", "r2") + "; wait");
  ASSERT_EQ(r.output.find("poll failed"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "dup rc=0"), 1) << r.output;
  EXPECT_EQ(count(r.output, "dup rc=1"), 1) << r.output;
  EXPECT_NE(r.output.find("already joined as rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("r0 rc=0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("r2 rc=0"), std::string::npos) << r.output;
}

TEST_F(RendezvousFaultTest, MissingRankIsNamedAfterTheTimeout) {
  // Ranks 0 and 2 of 3 start; rank 0 names rank 1 as missing when its --dist-timeout runs out.
  // Rank 2 starts first and waits up to 120 s for rank 0's store, so however rank 0's start-up
  // lags it is there to join; rank 0's 10 s are rank 2's margin to join once it is up. Rank 2
  // is stopped once rank 0 has given up.
  auto r = run_command("RANK=2 WORLD_SIZE=3 MASTER_PORT=" + port_ + " " +
                       mnist("--epochs 1 --dist-timeout 120 --output-dir " + (out_ / "r2")) +
                       " & pid=$!; RANK=0 WORLD_SIZE=3 MASTER_PORT=" + port_ + " " +
                       mnist("--epochs 1 --dist-timeout 10 --output-dir " + (out_ / "r0")) +
                       "; kill $pid 2>/dev/null; wait");
  EXPECT_NE(r.output.find("rank(s) 1 did not join within 10 s"), std::string::npos) << r.output;
}

}  // namespace
