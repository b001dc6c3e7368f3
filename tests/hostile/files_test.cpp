// Part of hostile_test, one file per class of hostile input (README, Tests: hostile input).
// Files from outside (issue 26) against the libraries that read them: metrics lines with absurd
// or malformed values for the charts, sweep records holding HTML, malformed and non-finite
// trial metrics, and parameter expressions whose ranges leave double. Library calls that used
// to hang or fill memory run in a forked child with a time and memory limit, and programs run
// under `timeout` (files_support.h), so a regression fails the test instead of hanging CI.
// files_programs_test.cpp has the programs' side.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "tests/hostile/files_support.h"
#include "tests/support/fixtures.h"
#include "tracking/report.h"
#include "tune/space.h"

namespace {

namespace fs = std::filesystem;
using namespace ctrain::testing;           // bin, run_command, read_text, TempDir
using namespace ctrain::testing::hostile;  // bounded, run_bounded, write_text, contains

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

}  // namespace
