// core/process.h: the one way ctrain starts and waits for a child, with real processes.
#include "core/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "../support/fixtures.h"

namespace ctrain {
namespace {

using ctrain::testing::TempDir;
using ctrain::testing::poll_until;
using ctrain::testing::read_text;

// A log file in `dir` for a child's output: its path, and an fd (close-on-exec, as
// SpawnOptions::output_fd wants) the test closes.
std::pair<std::string, int> open_log(const TempDir& dir) {
  const std::string log = (dir.path() / "log").string();
  return {log, ::open(log.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644)};
}

TEST(ProcessTest, ExitCodesAreTheShellsOnes) {
  EXPECT_EQ(Process::spawn({"sh", "-c", "exit 3"}).wait(), 3);
  Process killed = Process::spawn({"sh", "-c", "kill -9 $$"});
  EXPECT_EQ(killed.wait(), 128 + SIGKILL);
  EXPECT_TRUE(killed.signaled());
  EXPECT_FALSE(killed.running());
}

TEST(ProcessTest, AProgramThatCannotRunExits127SayingWhy) {
  TempDir dir;
  const auto [log, fd] = open_log(dir);
  ASSERT_GE(fd, 0) << log;
  SpawnOptions o;
  o.output_fd = fd;
  o.who = "tester";
  EXPECT_EQ(Process::spawn({"/ctrain-no-such-program"}, o).wait(), 127);
  ::close(fd);
  EXPECT_NE(read_text(log).find("tester: cannot execute /ctrain-no-such-program"), std::string::npos) << read_text(log);
}

// The child's environment gets the variables, its output goes to the fd, and poll() reports
// the end without blocking.
TEST(ProcessTest, EnvironmentOutputAndPoll) {
  TempDir dir;
  const auto [log, fd] = open_log(dir);
  ASSERT_GE(fd, 0) << log;
  SpawnOptions o;
  o.output_fd = fd;
  o.env = {{"CTRAIN_PROCESS_TEST", "seen"}};
  Process p = Process::spawn({"sh", "-c", "echo $CTRAIN_PROCESS_TEST; echo err >&2"}, o);
  ::close(fd);
  ASSERT_TRUE(poll_until([&] { return p.poll().has_value(); }, 30));
  EXPECT_EQ(*p.poll(), 0);
  EXPECT_EQ(read_text(log), "seen\nerr\n");
}

// signal_group reaches what the child started: its own process group.
TEST(ProcessTest, SignalGroupReachesTheGrandchildren) {
  TempDir dir;
  const std::string pidfile = (dir.path() / "grandchild").string();
  Process p = Process::spawn({"sh", "-c", "sleep 60 & echo $! > " + pidfile + "; wait"});
  ASSERT_TRUE(poll_until([&] { return !read_text(pidfile).empty(); }, 30));
  const pid_t grandchild = std::stoi(read_text(pidfile));
  EXPECT_EQ(::getpgid(grandchild), p.pid());
  p.signal_group(SIGTERM);
  EXPECT_EQ(p.wait(), 128 + SIGTERM);
  EXPECT_TRUE(poll_until([&] { return ::kill(grandchild, 0) != 0; }, 30)) << "the grandchild outlived the group's SIGTERM";
}

// That the child dies with the process that started it is tested end to end: a launcher
// SIGKILLed alone leaves no rank behind (tests/apps/multinode_test.cpp).

// As execvp looks: a path is taken as it is, a bare name is searched in the given PATH (an
// empty entry is the current directory), and a directory is not a program.
TEST(ProcessTest, ExecutableOnSearchesTheGivenPathAsExecvpDoes) {
  TempDir dir;
  const std::string bin = (dir.path() / "bin").string();
  std::filesystem::create_directories(bin + "/adir");
  std::ofstream(bin + "/tool") << "#!/bin/sh\n";
  std::ofstream(bin + "/plain") << "data\n";
  ::chmod((bin + "/tool").c_str(), 0755);
  EXPECT_TRUE(executable_on("tool", "/nonexistent:" + bin));
  EXPECT_FALSE(executable_on("tool", "/nonexistent"));
  EXPECT_FALSE(executable_on("tool", ""));
  EXPECT_TRUE(executable_on(bin + "/tool", ""));
  EXPECT_FALSE(executable_on("plain", bin));  // not executable
  EXPECT_FALSE(executable_on("adir", bin));   // a directory
  EXPECT_FALSE(executable_on(bin + "/adir", bin));
  EXPECT_TRUE(executable_on("sh", "/usr/bin:/bin"));
}

}  // namespace
}  // namespace ctrain

