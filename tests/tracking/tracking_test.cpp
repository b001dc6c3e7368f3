// TensorBoard event files and report pages, as users get them: a real trainer writes them, an
// independent reader (Python's protobuf, the schema compiled by protoc, its own CRC-32C)
// reads them back, and a real headless browser renders the pages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <set>

#include <nlohmann/json.hpp>

#include "../support/fixtures.h"
#include "core/error.h"
#include "core/fs.h"
#include "tracking/events.h"
#include "tracking/report.h"

namespace {

using ctrain::testing::bin;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

// RFC 3720 (iSCSI) B.4's test vectors, and the "123456789" check value.
TEST(Crc32cTest, KnownVectors) {
  using ctrain::tracking::crc32c;
  const std::string zeros(32, '\0'), ones(32, '\xff');
  std::string up(32, '\0');
  for (int i = 0; i < 32; ++i) up[i] = static_cast<char>(i);
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(up.data(), 32), 0x46DD794Eu);
}

// The reader's Python (with google.protobuf), or "" to skip.
std::string reader_python() { return ctrain::testing::python_with("google.protobuf"); }

std::vector<nlohmann::json> read_events(const std::vector<std::string>& files, int* code) {
  // CTRAIN_PROTOC: the protoc CMake found (on a GPU node it is not on PATH).
  std::string cmd = "PROTOC=" CTRAIN_PROTOC " " + reader_python() + " " + std::string(CTRAIN_SOURCE_DIR) +
                    "/tests/tracking/read_events.py " + CTRAIN_SOURCE_DIR + "/tracking/tensorboard.proto";
  for (const auto& f : files) cmd += " " + f;
  const auto r = run_command(cmd + " 2>&1");
  *code = r.exit_code;
  std::vector<nlohmann::json> out;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out.push_back(j);
  }
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) v.push_back(e.path().string());
  }
  std::sort(v.begin(), v.end());
  return v;
}

class EventFileTest : public ctrain::testing::SyntheticMnistSuite {};

TEST_F(EventFileTest, AnIndependentReaderSeesTheNumbersOfMetricsJsonl) {
  if (!ctrain::tracking::event_files_available()) GTEST_SKIP() << "built without protobuf/protoc: no event files";
  CTRAIN_PYTHON_OR_SKIP(reader, "google.protobuf", "python3-protobuf");
  const std::string run = mnist_on_data("--threads 1 --no-onnx --log-interval 4 --output-dir " + (out_ / "o"));
  auto r = run_command(run + " --epochs 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // A resumed run appends to the same logical run: a new file, the steps go on.
  r = run_command(run + " --epochs 3 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto files = event_files(out_ / "o");
  ASSERT_EQ(files.size(), 2u);
  int code = -1;
  const auto events = read_events(files, &code);
  ASSERT_EQ(code, 0);
  std::map<std::pair<std::string, int64_t>, double> seen;
  int versions = 0;
  for (const auto& e : events) {
    if (e.contains("file_version")) {
      EXPECT_EQ(e["file_version"], "brain.Event:2");
      ++versions;
      continue;
    }
    const auto key = std::make_pair(e["tag"].get<std::string>(), e["step"].get<int64_t>());
    EXPECT_EQ(seen.count(key), 0u) << "duplicate " << key.first << " at step " << key.second;
    seen[key] = e["value"].get<double>();
  }
  EXPECT_EQ(versions, 2);
  const auto epochs = ctrain::tracking::read_jsonl(out_ / "o/metrics.jsonl");
  ASSERT_EQ(epochs.size(), 3u);
  const std::map<std::string, std::string> tags = {{"train/loss", "train_loss"}, {"train/acc", "training_acc"},
                                                   {"val/loss", "val_loss"},     {"val/acc", "validation_acc"},
                                                   {"lr", "lr"},                 {"samples_per_sec", "samples_per_sec"}};
  for (const auto& m : epochs) {
    const int64_t epoch = m["epoch"].get<int64_t>();
    for (const auto& [tag, field] : tags) {
      const auto key = std::make_pair(tag, epoch);
      ASSERT_TRUE(seen.count(key)) << tag << " epoch " << epoch;
      const double want = m[field].get<double>();
      EXPECT_NEAR(seen[key], want, std::abs(want) * 1e-6 + 1e-7) << tag << " epoch " << epoch;
    }
  }
  // 512 samples / batch 64 = 8 steps an epoch; every 4th: steps 4 and 8 of each, numbered on.
  std::set<int64_t> loss_steps;
  for (const auto& [key, v] : seen) {
    if (key.first == "train/loss_step") {
      loss_steps.insert(key.second);
      EXPECT_TRUE(std::isfinite(v) && v > 0) << key.second;
    }
  }
  EXPECT_EQ(loss_steps, (std::set<int64_t>{4, 8, 12, 16, 20, 24}));
  // The trainer ended with report.html; ctrain-report rewrites it on demand, config included.
  EXPECT_TRUE(fs::exists(out_ / "o/report.html"));
  r = run_command(bin("ctrain-report") + " " + (out_ / "o"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("report.html"), std::string::npos) << r.output;
  const std::string page = ctrain::read_file(out_ / "o/report.html");
  EXPECT_NE(page.find("learning_rate"), std::string::npos) << "the run's configuration from model.pt";
  EXPECT_NE(page.find("events.out.tfevents."), std::string::npos);
  r = run_command(bin("ctrain-report") + " " + (out_ / "nothing"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find((out_ / "nothing") + " has neither metrics.jsonl"), std::string::npos) << r.output;
  // The reader checks the CRCs: one flipped byte in the data is found.
  std::string bytes = ctrain::read_file(files[0]);
  bytes[bytes.size() - 6] ^= 0x01;
  ctrain::write_file_atomic(out_ / "flipped", bytes);
  read_events({out_ / "flipped"}, &code);
  EXPECT_EQ(code, 1);
}

// TensorBoard's own reader (the EventAccumulator behind `tensorboard --logdir`, from PyPI) loads
// the run directory, resumed run included, with the numbers of metrics.jsonl; a flipped byte
// in a record costs that record, which its CRC check drops.
std::map<std::pair<std::string, int64_t>, double> tensorboard_scalars(const std::string& py, const std::string& path) {
  const auto r = run_command(py + " " + std::string(CTRAIN_SOURCE_DIR) + "/tests/tracking/read_events_tb.py " + path +
                             " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::map<std::pair<std::string, int64_t>, double> out;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    out[{j["tag"].get<std::string>(), j["step"].get<int64_t>()}] = j["value"].get<double>();
  }
  return out;
}

TEST_F(EventFileTest, TensorBoardsOwnReaderLoadsTheNumbersOfMetricsJsonl) {
  if (!ctrain::tracking::event_files_available()) GTEST_SKIP() << "built without protobuf/protoc: no event files";
  CTRAIN_PYTHON_OR_SKIP(tb, "tensorboard", "tensorboard (scripts/install-torch-wheel.sh has it)");
  const std::string run = mnist_on_data("--threads 1 --no-onnx --log-interval 4 --output-dir " + (out_ / "o"));
  ASSERT_EQ(run_command(run + " --epochs 2").exit_code, 0);
  ASSERT_EQ(run_command(run + " --epochs 3 --resume").exit_code, 0);
  auto seen = tensorboard_scalars(tb, out_ / "o");
  const auto epochs = ctrain::tracking::read_jsonl(out_ / "o/metrics.jsonl");
  ASSERT_EQ(epochs.size(), 3u);
  for (const auto& m : epochs) {
    const int64_t epoch = m["epoch"].get<int64_t>();
    for (const auto& [tag, field] : std::map<std::string, std::string>{
             {"train/loss", "train_loss"}, {"val/acc", "validation_acc"}, {"lr", "lr"}}) {
      const auto key = std::make_pair(tag, epoch);
      ASSERT_TRUE(seen.count(key)) << tag << " epoch " << epoch;
      const double want = m[field].get<double>();  // TensorBoard keeps float32
      EXPECT_NEAR(seen[key], want, std::abs(want) * 1e-6 + 1e-7) << tag << " epoch " << epoch;
    }
  }
  const auto files = event_files(out_ / "o");
  ASSERT_EQ(files.size(), 2u);
  fs::create_directories(out_ / "one");
  fs::create_directories(out_ / "flipped");
  std::string bytes = ctrain::read_file(files[0]);
  const std::string name = fs::path(files[0]).filename().string();
  ctrain::write_file_atomic(out_ / ("one/" + name), bytes);
  bytes[bytes.size() - 6] ^= 0x01;
  ctrain::write_file_atomic(out_ / ("flipped/" + name), bytes);
  const size_t whole = tensorboard_scalars(tb, out_ / "one").size();
  EXPECT_GT(whole, 0u);
  EXPECT_LT(tensorboard_scalars(tb, out_ / "flipped").size(), whole);
}

TEST_F(EventFileTest, AnUnwritableEventsFileIsReportedOnceAndTrainingGoesOn) {
  if (!ctrain::tracking::event_files_available()) GTEST_SKIP() << "built without protobuf/protoc: no event files";
  TempDir dir;
  ctrain::tracking::EventWriter w(dir.path().string());
  w.scalar("a", 1, 1.0);
  ASSERT_TRUE(w.flush());
  fs::remove(w.path());
  fs::create_directory(w.path());  // appending now fails: a directory stands in its place
  w.scalar("a", 2, 2.0);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(w.flush());
  w.scalar("a", 3, 3.0);
  EXPECT_FALSE(w.flush());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot append to " + w.path()), std::string::npos) << err;
  EXPECT_EQ(err.find("cannot append", err.find("cannot append") + 1), std::string::npos) << "reported twice: " << err;
}

// A sweep directory as the hyperparameter search leaves it: sweep.jsonl + trials/NNN/metrics.jsonl.
void write_sweep(const std::string& dir) {
  const std::vector<std::tuple<int, double, double, std::string>> trials = {
      {0, 0.01, 0.80, "completed"}, {1, 0.1, 0.86, "completed"}, {2, 0.001, 0.55, "early_terminated"}};
  std::string lines;
  for (const auto& [id, lr, best, status] : trials) {
    char name[16];
    std::snprintf(name, sizeof(name), "%03d", id);
    fs::create_directories(fs::path(dir) / "trials" / name);
    std::string m;
    const int epochs = status == "completed" ? 4 : 2;
    for (int e = 0; e < epochs; ++e) {
      m += nlohmann::json{{"epoch", e}, {"validation_acc", best * (e + 1) / epochs}}.dump() + "\n";
    }
    ctrain::write_file_atomic((fs::path(dir) / "trials" / name / "metrics.jsonl").string(), m);
    lines += nlohmann::json{{"trial", id}, {"params", {{"learning_rate", lr}, {"batch_size", 64}}},
                            {"status", status}, {"best_metric", best}, {"epochs_run", epochs}, {"seconds", 1.5}}
                 .dump() + "\n";
  }
  ctrain::write_file_atomic((fs::path(dir) / "sweep.jsonl").string(), lines);
}

TEST(ReportTest, RunAndSweepPagesAreSelfContainedWithCurvesAndTables) {
  TempDir dir;
  const std::string run = dir / "run";
  fs::create_directories(run);
  ctrain::write_file_atomic(run + "/metrics.jsonl",
                            "{\"epoch\":0,\"train_loss\":1.2,\"val_loss\":1.0,\"training_acc\":0.5,\"validation_acc\":0.6,\"seconds\":2}\n"
                            "{\"epoch\":1,\"train_loss\":0.7,\"val_loss\":0.8,\"training_acc\":0.7,\"validation_acc\":0.75,\"seconds\":2}\n");
  const std::string page = ctrain::read_file(ctrain::tracking::write_run_report(run, {{"learning_rate", 0.01}, {"app", {{"arch", "<mlp>"}}}}));
  EXPECT_NE(page.find("<svg"), std::string::npos);
  EXPECT_NE(page.find("app.arch"), std::string::npos);
  EXPECT_NE(page.find("&lt;mlp&gt;"), std::string::npos) << "config values are escaped";
  EXPECT_NE(page.find("<td>0.75</td>"), std::string::npos);  // best val acc
  EXPECT_EQ(page.find("http"), page.find("http://www.w3.org/2000/svg")) << "no fetches: only the SVG namespace";
  write_sweep(dir / "sweep");
  const std::string sweep = ctrain::read_file(ctrain::tracking::write_sweep_report(dir / "sweep", "validation_acc", "maximize"));
  // Sorted by the metric, best first; the early-terminated trial marked.
  EXPECT_LT(sweep.find("<td>0.86</td>"), sweep.find("<td>0.8</td>"));
  EXPECT_LT(sweep.find("<td>0.8</td>"), sweep.find("<td>0.55</td>"));
  EXPECT_NE(sweep.find("<tr class='stopped'><td>2</td><td>early terminated"), std::string::npos);
  EXPECT_NE(sweep.find(">learning_rate</text>"), std::string::npos) << "a scatter per numeric parameter";
  EXPECT_THROW(ctrain::tracking::write_sweep_report(dir / "sweep", "validation_acc", "up"), ctrain::Error);
  EXPECT_THROW(ctrain::tracking::read_jsonl(dir / "none.jsonl"), ctrain::Error);
  // A torn last line (a writer killed mid-append) is dropped only when the caller allows it;
  // a bad line before the end is an error either way.
  std::ofstream(dir / "torn.jsonl") << "{\"a\":1}\n\n{\"a\":2}\n{\"a\":";
  EXPECT_THROW(ctrain::tracking::read_jsonl(dir / "torn.jsonl"), ctrain::Error);
  EXPECT_EQ(ctrain::tracking::read_jsonl(dir / "torn.jsonl", true).size(), 2u);
  std::ofstream(dir / "bad.jsonl") << "{\"a\":1}\n{\"a\":\n{\"a\":2}\n";
  EXPECT_THROW(ctrain::tracking::read_jsonl(dir / "bad.jsonl", true), ctrain::Error);
}

// Renders `html` in headless Chromium: the screenshot must not be blank and the page must log
// nothing to the console. Returns the console lines.
std::string render(const std::string& html, const std::string& png) {
  const auto r = run_command("timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "
                             "--enable-logging=stderr --v=0 --window-size=1280,1000 --screenshot=" + png +
                             " file://" + html + " 2>&1");
  std::string console;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    if (line.find("CONSOLE") != std::string::npos) console += line + "\n";
  }
  return console;
}

// Distinct colours and the fraction of non-white pixels, read by Pillow (independent of us).
std::pair<int, double> image_stats(const std::string& png) {
  const auto r = run_command("/usr/bin/python3 -c \"from PIL import Image; im=Image.open('" + png +
                             "').convert('RGB'); px=list(im.getdata()); "
                             "print(len(set(px)), sum(p!=(255,255,255) for p in px)/len(px))\"");
  std::istringstream in(r.output);
  int colours = 0;
  double ink = 0;
  in >> colours >> ink;
  return {colours, ink};
}

TEST(ReportTest, PagesRenderInAHeadlessBrowserWithoutConsoleErrors) {
  if (run_command("command -v chromium").exit_code != 0) GTEST_SKIP() << "chromium is not installed";
  TempDir dir;
  const std::string run = dir / "run";
  fs::create_directories(run);
  std::string m;
  for (int e = 0; e < 10; ++e) {
    m += nlohmann::json{{"epoch", e}, {"train_loss", 2.0 / (e + 1)}, {"val_loss", 2.2 / (e + 1)},
                        {"training_acc", 0.5 + e * 0.04}, {"validation_acc", 0.48 + e * 0.04}, {"seconds", 1.0 + e % 3}}
             .dump() + "\n";
  }
  ctrain::write_file_atomic(run + "/metrics.jsonl", m);
  write_sweep(dir / "sweep");
  // The detector itself: a page that logs an error must be caught.
  ctrain::write_file_atomic(dir / "bad.html", "<html><body><script>console.error('boom')</script>x</body></html>");
  EXPECT_NE(render(dir / "bad.html", dir / "bad.png"), "") << "console messages are not seen: the check is blind";
  for (const std::string& page : {ctrain::tracking::write_run_report(run, {{"seed", 1}}),
                                  ctrain::tracking::write_sweep_report(dir / "sweep", "validation_acc", "maximize")}) {
    const std::string png = page + ".png";
    EXPECT_EQ(render(fs::absolute(page), png), "") << page;
    ASSERT_TRUE(fs::exists(png)) << page;
    const auto [colours, ink] = image_stats(png);
    EXPECT_GT(colours, 8) << page;
    EXPECT_GT(ink, 0.01) << page;
  }
}

}  // namespace
