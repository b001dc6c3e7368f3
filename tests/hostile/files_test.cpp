// Part of hostile_test: see tests/hostile/README (one file per class of hostile input).
// Files from outside (issue 26): metrics lines with absurd or malformed values, sweep records
// holding HTML, file names that are not UTF-8, devices and FIFOs where a file is expected,
// stray folders in the registry, torn lines left by a killed writer, and parameter expressions
// whose ranges leave double. Library calls that used to hang or fill memory run in a forked
// child with a time and memory limit, and programs run under `timeout`, so a regression fails
// the test instead of hanging CI.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "engine/checkpoint.h"
#include "serve/registry.h"
#include "tests/serve/serve_fixtures.h"
#include "tests/support/fixtures.h"
#include "tracking/report.h"
#include "tune/space.h"

namespace {

namespace fs = std::filesystem;
using ctrain::testing::bin;
using ctrain::testing::read_text;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;

// What a call run by bounded() came to.
struct Bounded {
  bool returned = false;  // fn returned (its text is in `text`); else `text` says what happened
  std::string text;
};

// Runs fn in a forked child with `seconds` of wall time and `mem_mb` MB more address space than
// this process has now. Only for code that starts no threads (the report and tune libraries).
Bounded bounded(const std::function<std::string()>& fn, double seconds = 20, size_t mem_mb = 1024) {
  int fds[2];
  if (::pipe(fds) != 0) return {false, "pipe failed"};
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  const rlim_t limit = static_cast<rlim_t>(pages) * ::sysconf(_SC_PAGESIZE) + (rlim_t{mem_mb} << 20);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const rlimit rl{limit, limit};
    ::setrlimit(RLIMIT_AS, &rl);
    std::string out;
    int code = 0;
    try {
      out = fn();
    } catch (const std::exception& e) {
      out = std::string("threw: ") + e.what();
      code = 3;
    }
    out = out.substr(0, 60000);  // below the pipe's buffer: the parent reads after the exit
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(code);
  }
  ::close(fds[1]);
  Bounded r;
  int status = 0;
  const bool exited = ctrain::testing::poll_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, seconds);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ::close(fds[0]);
    return {false, "did not return within " + std::to_string(seconds) + " s (killed)"};
  }
  char buf[4096];
  std::string text;
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {true, text};
  if (WIFSIGNALED(status)) return {false, "killed by signal " + std::to_string(WTERMSIG(status)) + " " + text};
  return {false, "exit " + std::to_string(WEXITSTATUS(status)) + ": " + text};
}

// A program run with a deadline (SIGKILL after `seconds`) and a 6 GB address-space cap: a
// regression that hangs or allocates without end fails here rather than wedging the machine.
ctrain::testing::CommandResult run_bounded(const std::string& cmd, int seconds = 60) {
  return run_command("ulimit -v 6000000; timeout -s KILL " + std::to_string(seconds) + " " + cmd);
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- (9) axis ticks on absurd values --------------------------------------------------------

TEST(HostileFilesReport, ChartsOfHugeOrNonFiniteValuesAreBounded) {
  // At 1e17 a step of 1 does not change a double: the old tick loop never ended.
  const std::vector<std::vector<std::pair<double, double>>> cases = {
      {{1e17, 0.9}},
      {{1e17, 0.9}, {1e17 + 64, 0.8}},
      {{0, 1e17}, {1, 1e17 + 16}},
      {{1e300, 0.5}, {-1e300, 0.6}},
      {{-1.7e308, -1.7e308}, {1.7e308, 1.7e308}},
      {{INFINITY, 0.5}, {NAN, 0.5}, {2, NAN}, {3, -INFINITY}},
      {{5e-324, 0.1}, {1e-323, 0.2}}};
  for (const auto& pts : cases) {
    const Bounded r = bounded([&] {
      const std::string line = ctrain::tracking::svg_line_chart("acc", "epoch", {{"val", pts}});
      const std::string scatter = ctrain::tracking::svg_scatter("lr", "lr", "acc", pts);
      return std::to_string(line.size() + scatter.size());
    }, 20, 512);
    ASSERT_TRUE(r.returned) << "first point " << pts[0].first << ": " << r.text;
    EXPECT_LT(std::stoull(r.text), 100000u) << "a chart is a few KB";
  }
}

TEST(HostileFilesReport, CtrainReportOnAHugeEpochFinishes) {
  TempDir d;
  write_text(d / "run/metrics.jsonl", "{\"epoch\":1e17,\"validation_acc\":0.9}\n"
                                      "{\"epoch\":1e999,\"validation_acc\":0.95,\"train_loss\":-1e308}\n");
  const auto r = run_bounded(bin("ctrain-report") + " " + d / "run", 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(read_text(d / "run/report.html"), "</html>"));
}

// ---- (11, 17) parameter expressions ---------------------------------------------------------

TEST(HostileFilesSpace, RangeIsExactIntegralAndBounded) {
  using ctrain::tune::parse_param;
  // range() counts exactly: 64 distinct values at 1e17, where a double step of 1 stood still.
  const Bounded r = bounded([] {
    const auto p = parse_param("n=choice(range(100000000000000000, 100000000000000064))");
    std::string out = std::to_string(p.choices.size());
    for (const auto& c : p.choices) out += " " + std::to_string(c.get<int64_t>());
    return out;
  }, 10, 256);
  ASSERT_TRUE(r.returned) << r.text;
  std::string expected = "64";
  for (int64_t k = 0; k < 64; ++k) expected += " " + std::to_string(100000000000000000LL + k);
  EXPECT_EQ(r.text, expected);
  EXPECT_EQ(parse_param("n=choice(range(1e17, 100000000000000002))").choices.size(), 2u);
  EXPECT_EQ(parse_param("n=choice(range(10, 0, -3))").choices, (std::vector<nlohmann::json>{10, 7, 4, 1}));

  // A billion values is refused by counting, before any is made, naming the expression.
  const Bounded big = bounded([] {
    try {
      parse_param("n=choice(range(0, 1e9))");
      return std::string("accepted");
    } catch (const ctrain::ConfigError& e) {
      return std::string(e.what());
    }
  }, 10, 256);
  ASSERT_TRUE(big.returned) << big.text;
  EXPECT_TRUE(contains(big.text, "range(0, 1e9)")) << big.text;
  EXPECT_TRUE(contains(big.text, "1000000000 values")) << big.text;
  for (const char* bad : {"n=choice(range(0, 1.5))", "n=choice(range(5, 5))", "n=choice(range(0, 1e300))",
                          "n=choice(range(-9223372036854775807, 9223372036854775807))", "n=randint(1e300)"}) {
    EXPECT_THROW(parse_param(bad), ctrain::ConfigError) << bad;
  }
}

TEST(HostileFilesSpace, RangesThatLeaveDoubleAreRefusedNamingTheExpression) {
  using ctrain::tune::parse_param;
  // exp(800) is inf (printed as null) and exp(-800) is 0: "--lr null" / "--lr 0" for a trial.
  for (const std::string expr : {"loguniform(700, 800)", "loguniform(-800, -700)", "qloguniform(-1, 750, 1)",
                                 "lognormal(0, 200)", "lognormal(705, 1)", "qlognormal(-707, 1, 1)",
                                 "uniform(-1e308, 1e308)", "normal(0, 1e308)", "quniform(0, 1e308, 1e-300)"}) {
    try {
      parse_param("lr=" + expr);
      ADD_FAILURE() << expr << " was accepted";
    } catch (const ctrain::ConfigError& e) {
      EXPECT_TRUE(contains(e.what(), "--param lr=" + expr)) << e.what();
    }
  }
  // What stays accepted draws finite, positive values, even from a normal's far tail.
  std::mt19937_64 rng(7);
  for (const std::string expr : {"loguniform(-700, 700)", "lognormal(690, 3)", "qlognormal(0, 1, 0.5)"}) {
    const auto p = parse_param("lr=" + expr);
    for (int i = 0; i < 2000; ++i) {
      const double v = p.sample(rng).get<double>();
      ASSERT_TRUE(std::isfinite(v)) << expr;
      ASSERT_GE(v, 0) << expr;
      EXPECT_NE(ctrain::tune::format_value(v), "null");
    }
    EXPECT_TRUE(std::isfinite(p.from_internal(1e6).get<double>())) << expr << ": a far draw is clamped";
  }
}

// ---- (12) malformed lines in a trial's metrics.jsonl ----------------------------------------

// A stand-in trainer: writes `lines` to its --output-dir/metrics.jsonl and exits 0.
std::string fake_trainer(const TempDir& d, const std::string& name, const std::string& lines) {
  const std::string path = d / name;
  write_text(path, "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --output-dir ]; then out=\"$2\"; fi\n  shift\n"
                   "done\nmkdir -p \"$out\"\ncat > \"$out/metrics.jsonl\" <<'EOF'\n" + lines + "EOF\n");
  ::chmod(path.c_str(), 0755);
  return path;
}

std::string sweep_cmd(const std::string& program, const std::string& out) {
  return bin("ctrain-sweep") + " --program " + program + " --output-dir " + out +
         " --max-trials 1 --param 'lr=choice(0.1)' --stop-grace 2";
}

TEST(HostileFilesSweep, MalformedMetricsLinesAreSkippedNamingTrialAndFile) {
  TempDir d;
  const std::string program = fake_trainer(d, "trainer.sh",
                                           "[1,2,3]\n"
                                           "5\n"
                                           "{\"epoch\":\"zero\",\"validation_acc\":0.5}\n"
                                           "{\"epoch\":0,\"validation_acc\":\"high\"}\n"
                                           "{\"epoch\":1,\"validation_acc\":0.75}\n"
                                           "{\"epoch\":2,\"validation_acc\":0.5,\n");
  const auto r = run_bounded(sweep_cmd(program, d / "s"), 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string file = d / "s/trials/000/metrics.jsonl";
  EXPECT_TRUE(contains(r.output, "trial 000: skipped " + file + ":1")) << r.output;
  EXPECT_TRUE(contains(r.output, file + ":3: epoch is not an integer")) << r.output;
  EXPECT_TRUE(contains(r.output, file + ":4: validation_acc is not a number")) << r.output;
  const auto trials = ctrain::tracking::read_jsonl(d / "s/sweep.jsonl");
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_EQ(trials[0]["status"], "completed");
  EXPECT_EQ(trials[0]["best_metric"], 0.75);
  // The report shows the trial and says which lines it left out.
  EXPECT_TRUE(contains(read_text(d / "s/report.html"), "malformed line(s) left out")) << r.output;
}

TEST(HostileFilesSweep, ANaNMetricIsReportedAsNaN) {
  TempDir d;
  // Python's json writes NaN; nlohmann (a ctrain trainer) writes null.
  const std::string program = fake_trainer(d, "nan.sh",
                                           "{\"epoch\":0,\"validation_acc\":NaN}\n"
                                           "{\"epoch\":1,\"validation_acc\":null}\n");
  const auto r = run_bounded(sweep_cmd(program, d / "s"), 60);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "without writing")) << r.output;
  EXPECT_TRUE(contains(r.output, "validation_acc is NaN at epoch 0")) << r.output;
  const auto trials = ctrain::tracking::read_jsonl(d / "s/sweep.jsonl");
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_EQ(trials[0]["status"], "failed");
  EXPECT_TRUE(contains(trials[0].value("reason", ""), "NaN")) << trials[0];
}

TEST(HostileFilesSweep, ADirectoryAsProgramIsRefusedNamingTheFlag) {
  TempDir d;
  fs::create_directories(d / "not-a-program");
  const auto r = run_bounded(sweep_cmd(d / "not-a-program", d / "s"), 60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--program " + d / "not-a-program")) << r.output;
  EXPECT_FALSE(fs::exists(d / "s/sweep.jsonl"));
}

TEST(HostileFilesSweep, ReadJsonlLeavesOutBadLinesWhenAskedAndReadsPythonNaN) {
  TempDir d;
  write_text(d / "m.jsonl", "{\"a\":NaN,\"b\":\"NaN\",\"c\":-Infinity}\n[1]\n{\"a\":1}\n" + std::string(100, '[') + "\n");
  std::vector<std::string> skipped;
  const auto rows = ctrain::tracking::read_jsonl(d / "m.jsonl", false, &skipped);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(rows[0]["a"].is_null());
  EXPECT_EQ(rows[0]["b"], "NaN") << "a string stays a string";
  EXPECT_TRUE(rows[0]["c"].is_null());
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_TRUE(contains(skipped[0], d / "m.jsonl:2")) << skipped[0];
  EXPECT_TRUE(contains(skipped[1], "deeper than")) << skipped[1];
  EXPECT_THROW(ctrain::tracking::read_jsonl(d / "m.jsonl"), ctrain::Error);
}

// ---- (14) values from sweep.jsonl printed into HTML -----------------------------------------

TEST(HostileFilesReport, SweepReportEscapesEveryValueFromTheFile) {
  TempDir d;
  nlohmann::json bad = {{"trial", "<i>t</i>"},
                        {"status", "<b>done</b>"},
                        {"best_metric", 0.5},
                        {"epochs_run", "<script>alert(1)</script>"},
                        {"seconds", "<u>"},
                        {"params", {{"<k>", "<img src=x>"}, {"lr", 0.1}}}};
  nlohmann::json odd = {{"trial", 1}, {"status", 5}, {"epochs_run", {{"<a>", "</td>"}}}, {"params", "<p id=q>"}};
  // nlohmann refuses a string that is not UTF-8: that line is left out, and named on the page.
  write_text(d / "s/sweep.jsonl", bad.dump() + "\n" + odd.dump() + "\n" +
                                      "{\"trial\":2,\"status\":\"ok\",\"params\":{\"name\":\"caf\xE9\"}}\n");
  std::string page;
  ASSERT_NO_THROW(page = ctrain::read_file(ctrain::tracking::write_sweep_report(d / "s", "validation_acc", "maximize")));
  for (const char* raw : {"<script>", "<i>", "<b>done", "<u>", "<k>", "<img", "<a>", "</td>\"", "<p id=q>"}) {
    EXPECT_FALSE(contains(page, raw)) << raw << " reached the page unescaped";
  }
  EXPECT_TRUE(contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(contains(page, "sweep.jsonl:3: malformed JSON")) << "the line left out is named";
  EXPECT_TRUE(ctrain::is_utf8(page));
}

// ---- (18) read_file and checkpoints: regular files only, bounded ----------------------------

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
