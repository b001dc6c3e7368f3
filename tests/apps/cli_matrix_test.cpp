// Every flag of every ctrain program given a bad value, as a real process: a wrong type, an
// out-of-range or non-finite number, a word outside the flag's choices, a path that cannot be
// read or written. Each must exit 2 (usage) or 1 (runtime: a path) with an error naming the
// flag or the path, and must not start work. A test per program also checks that the table
// covers every flag its --help lists, so no flag is added without a bad-input case. The flags
// the trainers share are tried on one of them (see shared_trainer_flags).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "../support/fixtures.h"
#ifdef CTRAIN_TESTS_HAVE_OPENCV
#include "../support/images.h"
#endif

namespace {

using ctrain::testing::bin;
using ctrain::testing::run_command;
using ctrain::testing::TempDir;
namespace fs = std::filesystem;

struct BadFlag {
  std::string program;  // ctrain-mnist, ctrain-birds, ctrain-export, ctrain-launch, ...
  std::string flag;     // the flag under test, as --help lists it first
  std::string value;    // its bad value ("" for a flag given as --flag=VALUE in `value`)
  int code;             // 2: usage, 1: runtime (a path)
  std::string names;    // what the error must name (default: the flag)
  std::string drop;     // a base flag this case replaces (mutually exclusive ones)
};

// The numbers every flag of a kind is tried with.
std::vector<BadFlag> ints(const std::string& program, const std::string& flag, const std::string& out_of_range) {
  std::vector<BadFlag> v{{program, flag, "abc", 2, flag, ""}};
  if (!out_of_range.empty()) v.push_back({program, flag, out_of_range, 2, flag, ""});
  return v;
}
std::vector<BadFlag> floats(const std::string& program, const std::string& flag, const std::string& out_of_range) {
  return {{program, flag, "abc", 2, flag, ""}, {program, flag, out_of_range, 2, flag, ""},
          {program, flag, "nan", 2, flag, ""}, {program, flag, "inf", 2, flag, ""}};
}
std::vector<BadFlag> choice(const std::string& program, const std::string& flag) {
  return {{program, flag, "bogus", 2, flag, ""}};
}
std::vector<BadFlag> boolean(const std::string& program, const std::string& flag) {
  return {{program, flag + "=maybe", "", 2, flag, ""}};
}

// The flags both trainers take from one place: apps/common/cli.h's add_common_flags_and_parse
// declares them (names, types, choices) and runs TrainConfig::validate() on them, and the
// engine checks the two paths before training. A bad value takes the same code in either
// program, so they are tried once, on kSharedFlagsTriedOn; CliCoverageTest counts them as
// covered for every trainer and checks that each trainer's --help declares them alike.
const std::string kSharedFlagsTriedOn = "ctrain-mnist";
const std::vector<std::string> kTrainers = {"ctrain-mnist", "ctrain-birds"};

std::vector<BadFlag> shared_trainer_flags(const std::string& p) {
  std::vector<std::vector<BadFlag>> parts = {
      floats(p, "--momentum", "1"), ints(p, "--seed", ""),  // every int64 seeds, as torch.manual_seed
      ints(p, "--threads", "-1"), ints(p, "--checkpoint-every", "-1"),
      ints(p, "--keep-checkpoints", "-1"), ints(p, "--log-interval", "-1"),
      ints(p, "--accumulate", "0"), floats(p, "--bucket-mb", "0"), floats(p, "--dist-timeout", "0"),
      ints(p, "--rank", "-2"), ints(p, "--world-size", "0"), ints(p, "--local-rank", "-2"),
      choice(p, "--device"), choice(p, "--on-nan"), choice(p, "--amp"), choice(p, "--dist-backend"),
      choice(p, "--dist-url"), boolean(p, "--no-onnx"), boolean(p, "--resume"), boolean(p, "--cuda-graph"),
      {{p, "--output-dir", "/proc/ctrain-no-such/dir", 1, "/proc/ctrain-no-such/dir", ""},
       {p, "--resume-from", "/ctrain-no-such.pt", 1, "/ctrain-no-such.pt", ""}}};
  std::vector<BadFlag> all;
  for (auto& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

// The settings every trainer has but declares itself (its own option, name and default): tried
// on each. `epochs`: the name --help lists first (the PyTorch scripts differ: --epochs, --num_epochs).
std::vector<BadFlag> own_trainer_flags(const std::string& p, const std::string& epochs) {
  std::vector<BadFlag> all = ints(p, epochs, "0");
  all[1].names = "--epochs";  // validated as one setting; --epochs is an alias everywhere
  for (auto part : {ints(p, "--batch-size", "0"), floats(p, "--learning-rate", "-1")}) {
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

std::vector<BadFlag> table() {
  std::vector<BadFlag> t = shared_trainer_flags(kSharedFlagsTriedOn);
  auto add = [&](std::vector<BadFlag> v) { t.insert(t.end(), v.begin(), v.end()); };
  add(own_trainer_flags("ctrain-mnist", "--epochs"));
  add(ints("ctrain-mnist", "--first-layer-neurons", "0"));
  add(ints("ctrain-mnist", "--second-layer-neurons", "0"));
  add(ints("ctrain-mnist", "--eval-batch-size", "0"));
  add({{"ctrain-mnist", "--data-folder", "/ctrain-no-such-dir", 1, "/ctrain-no-such-dir", ""}});

  add(own_trainer_flags("ctrain-birds", "--num-epochs"));
  add(ints("ctrain-birds", "--step-size", "-1"));  // 0: no decay
  add(floats("ctrain-birds", "--gamma", "0"));
  add(ints("ctrain-birds", "--workers", "-1"));
  add(ints("ctrain-birds", "--prefetch", "0"));
  add(ints("ctrain-birds", "--image-size", "8"));
  add(ints("ctrain-birds", "--max-image-pixels", "-1"));  // 0: no limit
  add(choice("ctrain-birds", "--arch"));
  add(choice("ctrain-birds", "--decode"));
  add(ints("ctrain-birds", "--synthetic-data", "-1"));  // 0: read --data-dir
  for (const char* f : {"--freeze-backbone", "--skip-bad-images", "--cache-decoded", "--full-decode",
                        "--data-only", "--channels-last", "--no-channels-last"}) {
    add(boolean("ctrain-birds", f));
  }
  add({{"ctrain-birds", "--data-dir", "/ctrain-no-such-dir", 1, "/ctrain-no-such-dir", ""},
       {"ctrain-birds", "--pretrained", "/ctrain-no-such.safetensors", 1, "/ctrain-no-such.safetensors", ""}});

  add({{"ctrain-export", "--checkpoint", "/ctrain-no-such.pt", 1, "/ctrain-no-such.pt", ""},
       {"ctrain-export", "--weights", "/ctrain-no-such.safetensors --arch resnet18", 1,
        "/ctrain-no-such.safetensors", "--checkpoint"},
       {"ctrain-export", "--arch", "bogus --weights /ctrain-no-such.safetensors", 2, "--arch", "--checkpoint"},
       {"ctrain-export", "--onnx", "/proc/ctrain-no-such/m.onnx", 1, "/proc/ctrain-no-such/m.onnx", ""}});
  add(ints("ctrain-export", "--num-classes", "0"));
  add(ints("ctrain-export", "--image-size", "8"));
  add(boolean("ctrain-export", "--verify"));
  add(floats("ctrain-export", "--tolerance", "-1"));

  add({{"ctrain-report", "--goal", "sideways", 2, "--goal", ""},
       {"ctrain-report", "--metric", "''", 2, "--metric", ""}});

  const std::string sw = "ctrain-sweep";
  add({{sw, "--program", "/ctrain-no-such-trainer", 2, "/ctrain-no-such-trainer", ""},
       {sw, "--output-dir", "/proc/ctrain-no-such/dir", 1, "/proc/ctrain-no-such/dir", ""},
       {sw, "--metric", "''", 2, "--metric", ""},
       {sw, "--goal", "sideways", 2, "--goal", ""},
       {sw, "--param", "lr", 2, "--param lr", ""},
       {sw, "--param", "'lr=uniform(1,0)'", 2, "--param lr", ""},
       {sw, "--config", "/ctrain-no-such.json", 2, "/ctrain-no-such.json", ""}});
  add(ints(sw, "--max-trials", "0"));
  add(ints(sw, "--max-concurrent", "0"));
  add(ints(sw, "--seed", ""));
  add(choice(sw, "--sampler"));
  add(choice(sw, "--policy"));
  add(floats(sw, "--slack-factor", "-1"));
  add(floats(sw, "--slack-amount", "-1"));
  add(ints(sw, "--evaluation-interval", "0"));
  add(ints(sw, "--delay-evaluation", "-1"));
  add(floats(sw, "--truncation-percentage", "-1"));
  add(ints(sw, "--grace-period", "0"));
  add(ints(sw, "--reduction-factor", "1"));
  add(ints(sw, "--max-epochs", "-1"));
  add(floats(sw, "--stop-grace", "-1"));
  add(boolean(sw, "--resume"));

  add(ints("ctrain-launch", "--nproc-per-node", "0"));
  add(ints("ctrain-launch", "--nnodes", "0"));
  add(ints("ctrain-launch", "--node-rank", "-1"));
  add({{"ctrain-launch", "--node-rank", "1", 2, "--node-rank", ""}});  // not below --nnodes 1
  add(ints("ctrain-launch", "--master-port", "70000"));
  add(ints("ctrain-launch", "--max-restarts", "-1"));
  add(floats("ctrain-launch", "--stop-grace", "-1"));
  add(ints("ctrain-launch", "--agent-port", "0"));
  add(floats("ctrain-launch", "--join-timeout", "0"));
  add(floats("ctrain-launch", "--node-timeout", "-1"));
  add({{"ctrain-launch", "--master-addr", "''", 2, "--master-addr", ""},
       {"ctrain-launch", "--rdzv-id", "''", 2, "--rdzv-id", ""}});
  return t;
}

// Real inputs, so that only the flag under test is wrong: synthetic MNIST, an image folder, a
// checkpoint to export. One test per program runs all its cases in turn (a process each):
// a ctest entry per case would pay this set-up ~150 times.
class CliMatrixTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string program = GetParam();
    if (!fs::exists(bin(program))) GTEST_SKIP() << program << " is not built here (see CMake's summary)";
    if (program == "ctrain-mnist" || program == "ctrain-export" || program == "ctrain-sweep") {
      ctrain::testing::write_synthetic_mnist(data_ / "mnist", 128, 32);
    }
    if (program == "ctrain-birds") {
#ifdef CTRAIN_TESTS_HAVE_OPENCV
      ctrain::testing::write_image_folder(data_ / "birds/train", {"chicken", "turkey"}, 4, 1);
      ctrain::testing::write_image_folder(data_ / "birds/val", {"chicken", "turkey"}, 2, 2);
#else
      // Every case fails before an image is decoded; the folder only has to index.
      for (const char* f : {"birds/train/chicken", "birds/train/turkey", "birds/val/chicken", "birds/val/turkey"}) {
        fs::create_directories(data_ / f);
        std::ofstream(data_ / (std::string(f) + "/0.jpg")) << "not decoded";
      }
#endif
    }
    if (program == "ctrain-report") {
      fs::create_directories(data_ / "run");
      std::ofstream(data_ / "run/metrics.jsonl") << "{\"epoch\":0,\"validation_acc\":0.5}\n";
    }
    if (program == "ctrain-export") {
      const auto r = run_command(bin("ctrain-mnist") + " --data-folder " + (data_ / "mnist") +
                                 " --epochs 1 --no-onnx --first-layer-neurons 8 --second-layer-neurons 8"
                                 " --output-dir " + (data_ / "trained"));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  // The program's flags (first name of each) with valid values; a case replaces its own.
  std::vector<std::pair<std::string, std::string>> base(const std::string& program, const TempDir& out) const {
    if (program == "ctrain-mnist") {
      return {{"--data-folder", data_ / "mnist"}, {"--epochs", "1"}, {"--no-onnx", ""},
              {"--output-dir", out / "o"}};
    }
    if (program == "ctrain-birds") {
      return {{"--data-dir", data_ / "birds"}, {"--num-epochs", "1"}, {"--image-size", "32"},
              {"--no-onnx", ""}, {"--output-dir", out / "o"}};
    }
    if (program == "ctrain-export") {
      return {{"--checkpoint", data_ / "trained/model.pt"}, {"--onnx", out / "m.onnx"}};
    }
    if (program == "ctrain-report") return {{"", data_ / "run"}};  // the positional directory
    if (program == "ctrain-sweep") {
      return {{"--program", bin("ctrain-mnist")}, {"--output-dir", out / "o"},
              {"--param", "'learning-rate=uniform(0.01,0.1)'"}};  // the trainer's arguments follow
    }
    return {{"--nproc-per-node", "1"}};  // ctrain-launch; the program follows
  }
  TempDir data_;
};

TEST_P(CliMatrixTest, EveryBadValueIsRefusedWithTheRightCodeNamingTheFlag) {
  int cases = 0;
  for (const BadFlag& c : table()) {
    if (c.program != GetParam()) continue;
    ++cases;
    TempDir out;
    std::string cmd = bin(c.program);
    const std::string flag = c.flag.substr(0, c.flag.find('='));
    for (const auto& [f, v] : base(c.program, out)) {
      if (f.empty()) {
        cmd += " " + v;  // a positional argument
      } else if (f != flag && f != c.drop) {
        cmd += " " + f + (v.empty() ? "" : " " + v);
      }
    }
    cmd += " " + c.flag + (c.value.empty() ? "" : " " + c.value);
    if (c.program == "ctrain-launch") cmd += " touch " + (out / "ran");
    if (c.program == "ctrain-sweep") cmd += " -- --epochs 1 --no-onnx --data-folder " + (data_ / "mnist");
    SCOPED_TRACE(cmd);
    const auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, c.code) << r.output;
    EXPECT_NE(r.output.find(c.names.empty() ? flag : c.names), std::string::npos) << r.output;
    // Nothing started: no training, nothing in the output directory, no launched program.
    EXPECT_EQ(r.output.find("Training accuracy"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Epoch 0/"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out / "o/checkpoints"));
    EXPECT_FALSE(fs::exists(out / "ran"));
    EXPECT_FALSE(fs::exists(out / "o/trials"));  // ctrain-sweep started no trial
    // Short: the error and at most a hint or CLI11's "Run with --help" line.
    EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 3) << r.output;
  }
  EXPECT_GT(cases, 0);
}

const auto kPrograms =
    ::testing::Values("ctrain-mnist", "ctrain-birds", "ctrain-export", "ctrain-launch", "ctrain-report",
                      "ctrain-sweep");
std::string program_name(const ::testing::TestParamInfo<std::string>& info) { return info.param.substr(7); }

INSTANTIATE_TEST_SUITE_P(EveryProgram, CliMatrixTest, kPrograms, program_name);

class CliCoverageTest : public ::testing::TestWithParam<std::string> {};

// Each flag of a program's --help (its first name) and its line there, the default value left
// out (the trainers' defaults differ) and spaces collapsed: "--momentum FLOAT SGD momentum".
std::map<std::string, std::string> help_flags(const std::string& help) {
  std::map<std::string, std::string> flags;
  const std::regex line(R"(^  (-[-A-Za-z0-9_]+)[ ,=])");
  std::istringstream lines(help);
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line) || m[1] == "-h") continue;
    const std::string flag = m[1];
    l = std::regex_replace(l, std::regex(R"(=\S*)"), "");
    flags[flag] = std::regex_replace(std::regex_replace(l, std::regex(R"(\s+)"), " "), std::regex("^ | $"), "");
  }
  return flags;
}

TEST_P(CliCoverageTest, TableCoversEveryFlagInHelp) {
  const std::string program = GetParam();
  if (!fs::exists(bin(program))) GTEST_SKIP() << program << " is not built here (see CMake's summary)";
  const auto r = run_command(bin(program) + " --help");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto help = help_flags(r.output);
  std::set<std::string> in_help, in_table;
  for (const auto& [flag, text] : help) in_help.insert(flag);
  for (const auto& c : table()) {
    if (c.program == program) in_table.insert(c.flag.substr(0, c.flag.find('=')));
  }
  const bool trainer = std::find(kTrainers.begin(), kTrainers.end(), program) != kTrainers.end();
  if (trainer && program != kSharedFlagsTriedOn) {
    // The shared flags, tried on kSharedFlagsTriedOn: declared here as there.
    const auto r0 = run_command(bin(kSharedFlagsTriedOn) + " --help");
    ASSERT_EQ(r0.exit_code, 0) << r0.output;
    const auto help0 = help_flags(r0.output);
    for (const auto& c : shared_trainer_flags(program)) {
      const std::string flag = c.flag.substr(0, c.flag.find('='));
      in_table.insert(flag);
      ASSERT_TRUE(help.count(flag)) << program << " --help lacks the shared flag " << flag;
      EXPECT_EQ(help.at(flag), help0.count(flag) ? help0.at(flag) : "") << flag;
    }
  }
  ASSERT_FALSE(in_help.empty()) << r.output;
  EXPECT_EQ(in_help, in_table);
}

INSTANTIATE_TEST_SUITE_P(EveryProgram, CliCoverageTest, kPrograms, program_name);

// A flag a program does not take is a usage error naming it and, where one is close, the flag
// meant: the MNIST sample's --data-folder on the birds trainer, a typo, the other trainer's.
TEST(CliUnknownFlag, IsNamedWithTheClosestFlagTheProgramTakes) {
  struct Case {
    std::string program, args, names, suggests;  // suggests "": no "did you mean"
  };
  const std::vector<Case> cases = {
      {"ctrain-birds", "--data-folder /tmp --epochs 1", "--data-folder", "--data-dir"},
      {"ctrain-mnist", "--data-dir=/tmp --epochs 1", "--data-dir", "--data-folder"},
      {"ctrain-mnist", "--epochs 1 --learning-rtae 0.1", "--learning-rtae", "--learning-rate"},
      {"ctrain-birds", "--num_epoch 2", "--num_epoch", "--num-epochs"},
      {"ctrain-mnist", "--zzzz 3", "--zzzz", ""},
  };
  for (const auto& c : cases) {
    if (!fs::exists(bin(c.program))) continue;
    const auto r = run_command(bin(c.program) + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.program << " " << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("unknown flag " + c.names), std::string::npos) << r.output;
    if (c.suggests.empty()) {
      EXPECT_EQ(r.output.find("did you mean"), std::string::npos) << r.output;
    } else {
      EXPECT_NE(r.output.find("did you mean " + c.suggests + "?"), std::string::npos) << r.output;
    }
    EXPECT_EQ(r.output.find("config:"), std::string::npos) << "work started: " << r.output;
  }
}

}  // namespace
