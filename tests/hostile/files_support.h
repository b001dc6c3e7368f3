#pragma once
// Part of hostile_test: what files_test.cpp and files_programs_test.cpp share (a call run in a
// child with time and memory bounds, a program run with a deadline, files written from text).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "tests/support/fixtures.h"

namespace ctrain::testing::hostile {

// What a call run by bounded() came to.
struct Bounded {
  bool returned = false;  // fn returned (its text is in `text`); else `text` says what happened
  std::string text;
};

// Runs fn in a forked child with `seconds` of wall time and `mem_mb` MB more address space than
// this process has now. Only for code that starts no threads (the report and tune libraries).
inline Bounded bounded(const std::function<std::string()>& fn, double seconds = 20, size_t mem_mb = 1024) {
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
inline ctrain::testing::CommandResult run_bounded(const std::string& cmd, int seconds = 60) {
  return ctrain::testing::run_command("ulimit -v 6000000; timeout -s KILL " + std::to_string(seconds) + " " + cmd);
}

inline void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace ctrain::testing::hostile
