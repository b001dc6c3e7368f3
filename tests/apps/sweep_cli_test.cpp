// ctrain-sweep end to end: real processes, real signals, files on disk. The scheduling tests
// run a scripted stand-in trainer (tests/tune/stand_in_trainer.sh: the trainers' command line,
// metrics.jsonl, SIGTERM and --resume, with a fixed metric stream per learning rate), so they are
// fast and their decisions fixed; AshaPromotesByResumingFromTheCheckpoint keeps the real
// ctrain-mnist. Also the real trainer's side of the contract the stand-in imitates: SIGTERM
// stops a run at a step boundary with its last checkpoint intact.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "../support/fixtures.h"
#include "tracking/report.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
using ctrain::testing::count_lines;
using ctrain::testing::poll_until;
using ctrain::testing::read_text;
using ctrain::testing::spawn_command;
using ctrain::testing::wait_exit;
using ctrain::tracking::read_jsonl;
namespace fs = std::filesystem;

// Fashion-MNIST as Debian's dataset-fashion-mnist installs it (make deps).
std::string fashion() {
  // CTRAIN_FASHION_MNIST, else FASHION_MNIST_DIR (what scripts/node-build.sh exports on a GPU node).
  for (const char* name : {"CTRAIN_FASHION_MNIST", "FASHION_MNIST_DIR"}) {
    if (const char* env = std::getenv(name)) return env;
  }
  return "/usr/share/datasets/fashion-mnist";
}

// The stand-in trainer: its validation_acc after epoch e is 1 - exp(-10 * lr * (e + 1)).
std::string stand_in() { return std::string(CTRAIN_SOURCE_DIR) + "/tests/tune/stand_in_trainer.sh"; }

class SweepTest : public ctrain::testing::SyntheticMnistSuite {
 protected:
  // A sweep of the stand-in trainer; `trainer_args` are its fixed arguments.
  std::string sweep(const std::string& dir, const std::string& settings, const std::string& trainer_args) const {
    return bin("ctrain-sweep") + " --program " + stand_in() + " --output-dir " + dir + " " + settings + " -- " +
           trainer_args;
  }
};

TEST_F(SweepTest, TrainerStopsOnSigtermKeepingItsLastCheckpoint) {
  // Fashion-MNIST's epochs are long enough that the SIGTERM lands mid-run.
  if (!fs::exists(fs::path(fashion()) / "train-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(fashion()) / "train-images-idx3-ubyte")) {
    GTEST_SKIP() << "Fashion-MNIST not at " << fashion() << " (apt-get install dataset-fashion-mnist)";
  }
  const std::string out = out_ / "run", log = out_ / "log";
  const pid_t pid = spawn_command(bin("ctrain-mnist") + " --data-folder " + fashion() + " --threads 1 --no-onnx --epochs 40 " +
                              "--output-dir " + out, log);
  ASSERT_TRUE(poll_until([&] { return count_lines(out + "/metrics.jsonl") >= 1; })) << read_text(log);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid), 128 + SIGTERM) << read_text(log);
  const std::string text = read_text(log);
  EXPECT_NE(text.find("stopped by SIGTERM in epoch"), std::string::npos) << text;
  EXPECT_NE(text.find("rerun with --resume"), std::string::npos) << text;
  EXPECT_LT(count_lines(out + "/metrics.jsonl"), 40u);
  // The checkpoint it kept is whole: the run continues from it.
  const auto r = run_command(bin("ctrain-mnist") + " --data-folder " + fashion() +
                             " --threads 1 --no-onnx --resume --output-dir " + out + " --epochs " +
                             std::to_string(count_lines(out + "/metrics.jsonl") + 1));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
}

// Six trials, bandit: the trials with a poor learning rate are stopped, all outputs written.
TEST_F(SweepTest, BanditSweepStopsPoorTrialsAndWritesItsOutputs) {
  const std::string dir = out_ / "sweep";
  const auto r = run_command(sweep(dir,
                                   "--metric validation_acc --max-trials 6 --max-concurrent 2 --seed 1 "
                                   "--policy bandit --slack-factor 0.1 --evaluation-interval 1 "
                                   "--param learning-rate='loguniform(-6,-1)' --param batch-size='choice(64,128)'",
                                   "--epochs 3"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto trials = read_jsonl(dir + "/sweep.jsonl");
  ASSERT_EQ(trials.size(), 6u) << r.output;
  std::set<int64_t> ids;
  int stopped = 0;
  const nlohmann::json* best = nullptr;
  for (const auto& t : trials) {
    ids.insert(t["trial"].get<int64_t>());
    for (const char* k : {"params", "status", "best_metric", "epochs_run", "seconds"}) ASSERT_TRUE(t.contains(k)) << t;
    const std::string status = t["status"];
    EXPECT_TRUE(status == "completed" || status == "early_terminated") << t;
    if (status == "early_terminated") {
      ++stopped;
      EXPECT_NE(t["reason"].get<std::string>().find("bandit"), std::string::npos) << t;
    } else {
      EXPECT_EQ(t["epochs_run"], 3) << t;
    }
    // best_metric is the best validation_acc the trial's own metrics.jsonl holds.
    double b = 0;
    char name[8];
    std::snprintf(name, sizeof(name), "%03d", t["trial"].get<int>());
    for (const auto& m : read_jsonl(dir + "/trials/" + name + "/metrics.jsonl")) b = std::max(b, m["validation_acc"].get<double>());
    EXPECT_DOUBLE_EQ(t["best_metric"].get<double>(), b) << t;
    EXPECT_EQ(t["params"].size(), 2u);
    if (best == nullptr || t["best_metric"] > (*best)["best_metric"]) best = &t;
  }
  EXPECT_EQ(ids, (std::set<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_GE(stopped, 1) << r.output;
  EXPECT_LT(stopped, 6) << r.output;
  EXPECT_NE(r.output.find(" stopped at epoch "), std::string::npos) << r.output;
  EXPECT_EQ(nlohmann::json::parse(read_text(dir + "/best.json")), *best);
  EXPECT_TRUE(fs::exists(dir + "/report.html"));
  EXPECT_NE(r.output.find("best: trial "), std::string::npos) << r.output;
}

// A sweep SIGKILLed mid-trial and resumed ends with the same trials, parameters and statuses
// as one left alone (one trial at a time: no decision depends on timing). The stand-in of trial
// 003, which the policy lets finish, holds after its first epoch (CTRAIN_STAND_IN_HOLD), so the
// kill lands while it trains and the resumed sweep continues it from its checkpoint.
TEST_F(SweepTest, KilledSweepResumesToTheSameResult) {
  const std::string settings =
      "--max-trials 4 --max-concurrent 1 --seed 3 --sampler tpe --policy median "
      "--param learning-rate='loguniform(-6,-1)' --param batch-size='choice(64,128)'";
  const std::string args = "--epochs 2";
  const std::string a = out_ / "alone", b = out_ / "killed";
  // Epochs of 1 s: a trial the median policy stops after its first epoch must get the SIGTERM
  // before it writes its second, or its record (epochs_run, best_metric, what TPE learns from)
  // differs between the two sweeps. The sweep looks every 100 ms; 1 s leaves a loaded machine
  // room (0.2 s did not, in principle).
  ::setenv("CTRAIN_STAND_IN_EPOCH_S", "1", 1);
  const auto ra = run_command(sweep(a, settings, args));
  ASSERT_EQ(ra.exit_code, 0) << ra.output;
  // The trial held below is one the policy lets finish: a policy stop would end the hold early.
  ASSERT_NE(ra.output.find("trial 003 completed"), std::string::npos) << ra.output;

  const pid_t pid = spawn_command("env CTRAIN_STAND_IN_HOLD=" + b + "/trials/003 " + sweep(b, settings, args),
                                  out_ / "killed.log");
  // Killed while trial 003 trains, after trials 000 to 002 finished.
  ASSERT_TRUE(poll_until([&] { return count_lines(b + "/trials/003/metrics.jsonl") >= 1; })) << read_text(out_ / "killed.log");
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
  EXPECT_LT(count_lines(b + "/sweep.jsonl"), 4u);
  // Without --resume the directory is refused; with it, the sweep goes on.
  const auto again = run_command(sweep(b, settings, args));
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("already holds a sweep"), std::string::npos) << again.output;
  // A requeued job's command line with --resume appended: a differing setting is refused by
  // name with both values, the original ones are accepted.
  const auto differ = run_command(sweep(b, "--max-trials 5" + settings.substr(settings.find(' ', 13)) + " --resume", args));
  EXPECT_EQ(differ.exit_code, 2) << differ.output;
  EXPECT_NE(differ.output.find("--max-trials 5 differs from the sweep's saved 4"), std::string::npos) << differ.output;
  const auto rb = run_command(sweep(b, settings + " --resume", args));
  ASSERT_EQ(rb.exit_code, 0) << rb.output;
  EXPECT_NE(rb.output.find("trial 003 continues from its checkpoint"), std::string::npos) << rb.output;
  EXPECT_NE(read_text(b + "/trials/003/log.txt").find("resumed from"), std::string::npos);

  auto key = [](const nlohmann::json& t) {
    return t["trial"].dump() + " " + t["params"].dump() + " " + t["status"].get<std::string>() + " " +
           t["epochs_run"].dump();
  };
  std::set<std::string> ka, kb;
  for (const auto& t : read_jsonl(a + "/sweep.jsonl")) ka.insert(key(t));
  for (const auto& t : read_jsonl(b + "/sweep.jsonl")) kb.insert(key(t));
  EXPECT_EQ(ka.size(), 4u);
  EXPECT_EQ(ka, kb) << ra.output << "\n---\n" << rb.output;
  ::unsetenv("CTRAIN_STAND_IN_EPOCH_S");
}

// ASHA on the real trainer (the one sweep here that runs it) and the synthetic set: rungs of
// 1 and 2 epochs; the promoted trial resumes from its real checkpoint (so it trains 2 epochs
// in all, not 1 + 2).
TEST_F(SweepTest, AshaPromotesByResumingFromTheCheckpoint) {
  const std::string dir = out_ / "asha";
  const auto r = run_command(bin("ctrain-sweep") + " --program " + bin("ctrain-mnist") + " --output-dir " + dir +
                             " --max-trials 4 --max-concurrent 1 --policy asha --grace-period 1 --reduction-factor 2"
                             " --max-epochs 2 --param learning-rate='loguniform(-6,-1)' -- --threads 1 --no-onnx "
                             "--data-folder " + data_->path().string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto trials = read_jsonl(dir + "/sweep.jsonl");
  ASSERT_EQ(trials.size(), 4u);
  int completed = 0;
  for (const auto& t : trials) {
    char name[8];
    std::snprintf(name, sizeof(name), "%03d", t["trial"].get<int>());
    const std::string log = read_text(dir + "/trials/" + name + "/log.txt");
    if (t["status"] == "completed") {
      ++completed;
      EXPECT_EQ(t["epochs_run"], 2) << t;
      EXPECT_NE(log.find("resumed from"), std::string::npos) << log;
    } else {
      EXPECT_EQ(t["status"], "early_terminated") << t;
      EXPECT_EQ(t["epochs_run"], 1) << t;
      EXPECT_NE(t["reason"].get<std::string>().find("paused at rung 0"), std::string::npos) << t;
    }
  }
  EXPECT_EQ(completed, 2) << r.output;  // top 1/2 of 4
  EXPECT_NE(r.output.find("promoted"), std::string::npos) << r.output;
}

TEST_F(SweepTest, BadSettingsAreUsageErrorsNamingTheParameter) {
  const std::string d = out_ / "bad", data = "--epochs 1";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--param lr='gaussian(0,1)'", "--param lr=gaussian(0,1): unknown expression"},
      {"--param batch-size='choice()'", "--param batch-size=choice(): choice() needs at least one value"},
      {"--param learning-rate='uniform(0.1,0.01)'", "lo must be below hi"},
      {"--param learning-rate='uniform(0.01,0.1)' --policy bandit", "exactly one of --slack-factor"},
      {"--param learning-rate='uniform(0.01,0.1)' --sampler grid", "--sampler grid needs choice() parameters"},
      {"", "--param is required"},
  };
  for (const auto& [settings, why] : cases) {
    const auto r = run_command(sweep(d, settings, data));
    EXPECT_EQ(r.exit_code, 2) << settings << "\n" << r.output;
    EXPECT_NE(r.output.find(why), std::string::npos) << settings << "\n" << r.output;
    EXPECT_FALSE(fs::exists(d)) << settings;
  }
  const auto missing = run_command(bin("ctrain-sweep") + " --program /no/such/trainer --output-dir " + d +
                                   " --param lr='uniform(0,1)'");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("--program /no/such/trainer: not found"), std::string::npos) << missing.output;
  // A metric the program never writes: found after its first epoch, the sweep stops.
  const auto metric = run_command(sweep(d, "--metric val_accuracy --param learning-rate='uniform(0.01,0.1)'", data));
  EXPECT_EQ(metric.exit_code, 2) << metric.output;
  EXPECT_NE(metric.output.find("--metric val_accuracy"), std::string::npos) << metric.output;
  EXPECT_NE(metric.output.find("validation_acc"), std::string::npos) << metric.output;  // what it does write
  // The same when the trainer exits before the sweep's next look at its file: the reason read at
  // its exit is the one given (this once depended on which came first).
  const std::string quick = out_ / "quick-trainer.sh", quick_dir = out_ / "quick";
  std::ofstream(quick) << "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --output-dir ] && d=$2; shift; done\n"
                          "mkdir -p \"$d\" && echo '{\"epoch\":1,\"validation_acc\":0.5}' > \"$d/metrics.jsonl\"\n";
  fs::permissions(quick, fs::perms::owner_all);
  const auto fast = run_command(bin("ctrain-sweep") + " --program " + quick + " --output-dir " + quick_dir +
                                " --metric val_accuracy --param lr='uniform(0.01,0.1)'");
  EXPECT_EQ(fast.exit_code, 2) << fast.output;
  EXPECT_NE(fast.output.find("has no such field; it writes: epoch, validation_acc"), std::string::npos) << fast.output;
  // Fixed arguments that refuse to run: the first trial's usage error ends the sweep.
  const auto usage = run_command(sweep(out_ / "usage", "--param learning-rate='uniform(0.01,0.1)'", data + " --bogus"));
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
  EXPECT_NE(usage.output.find("exited 2 (usage)"), std::string::npos) << usage.output;
}

// A policy stop at a trial's last epoch: the trial writes that epoch and exits at once, so its
// exit comes before the sweep's next look at its file. The decision is the one the look would
// have made (it once depended on which came first), and a resumed sweep that finds the trial
// unrecorded makes it again. Needs no data: the trainer is a shell script.
TEST(SweepExitTest, APolicyStopAtTheLastEpochHoldsWhenTheTrialExitsFirst) {
  const TempDir tmp;
  const std::string trainer = tmp / "quick-trainer.sh", dir = tmp / "sweep";
  std::ofstream(trainer) << "#!/bin/sh\n"
                            "while [ $# -gt 0 ]; do case \"$1\" in --output-dir) d=$2;; --lr) lr=$2;; esac; shift; done\n"
                            "mkdir -p \"$d\" && echo \"{\\\"epoch\\\":1,\\\"validation_acc\\\":$lr}\" > \"$d/metrics.jsonl\"\n";
  fs::permissions(trainer, fs::perms::owner_all);
  // Grid order: trial 000 reaches 0.9, trial 001 0.1 < 0.9 / 1.1, which bandit stops.
  const auto r = run_command(bin("ctrain-sweep") + " --program " + trainer + " --output-dir " + dir +
                             " --max-trials 2 --sampler grid --policy bandit --slack-factor 0.1"
                             " --param lr='choice(0.9,0.1)'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto trials = read_jsonl(dir + "/sweep.jsonl");
  ASSERT_EQ(trials.size(), 2u) << r.output;
  EXPECT_EQ(trials[0]["status"], "completed") << trials[0];
  EXPECT_EQ(trials[1]["status"], "early_terminated") << trials[1];
  EXPECT_EQ(trials[1]["exit_code"], 0) << trials[1];
  EXPECT_EQ(trials[1]["epochs_run"], 1) << trials[1];
  EXPECT_EQ(trials[1].value("reason", "").rfind("bandit at interval 1: ", 0), 0u) << trials[1];
  EXPECT_NE(r.output.find("trial 001 stopped at epoch 1: "), std::string::npos) << r.output;

  // The sweep as if killed between trial 001's exit and its record: --resume reruns it and
  // records the same stop.
  std::ofstream(dir + "/sweep.jsonl", std::ios::trunc) << trials[0].dump() << "\n";
  const auto rr = run_command(bin("ctrain-sweep") + " --resume --output-dir " + dir);
  ASSERT_EQ(rr.exit_code, 0) << rr.output;
  EXPECT_NE(rr.output.find("trial 001 continues from its checkpoint"), std::string::npos) << rr.output;
  const auto resumed = read_jsonl(dir + "/sweep.jsonl");
  ASSERT_EQ(resumed.size(), 2u) << rr.output;
  for (const char* k : {"trial", "params", "status", "reason", "best_metric", "epochs_run", "exit_code"}) {
    EXPECT_EQ(resumed[1].value(k, nlohmann::json()), trials[1].value(k, nlohmann::json())) << k << "\n" << rr.output;
  }
}

// --config holds the same settings as JSON; flags on the command line win.
TEST_F(SweepTest, JsonConfigFileGivesTheSameSettings) {
  const std::string cfg = out_ / "sweep.json", dir = out_ / "cfg";
  std::ofstream(cfg) << nlohmann::json{{"program", stand_in()},
                                       {"max-trials", 3},
                                       {"sampler", "grid"},
                                       {"param", {{"learning-rate", "choice(0.01, 0.05, 0.1)"}}},
                                       {"args", {"--epochs", "1"}}}
                            .dump();
  const auto r = run_command(bin("ctrain-sweep") + " --config " + cfg + " --output-dir " + dir + " --max-trials 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto trials = read_jsonl(dir + "/sweep.jsonl");
  ASSERT_EQ(trials.size(), 2u);
  std::set<double> lrs;
  for (const auto& t : trials) lrs.insert(t["params"]["learning-rate"].get<double>());
  EXPECT_EQ(lrs, (std::set<double>{0.01, 0.05}));  // the grid's first two points
  const auto saved = nlohmann::json::parse(read_text(dir + "/config.json"));
  EXPECT_EQ(saved["sampler"], "grid");
  EXPECT_EQ(saved["max_trials"], 2);
}

}  // namespace
