#pragma once
// Child processes, written once for every program that starts them (ctrain-launch's ranks,
// ctrain-sweep's trials) and for the tests: each child runs in a process group of its own, so
// a signal reaches it and whatever it starts; it dies with the process that started it; and it
// is waited for by its own pid, never by "any child".
#include <sys/types.h>

#include <csignal>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ctrain {

struct SpawnOptions {
  // The child's stdout and stderr (a log file or a pipe's write end), when >= 0. Open it with
  // O_CLOEXEC: the child keeps only its copies on 1 and 2.
  int output_fd = -1;
  // Sent to the child when the process that started it dies, however it dies (SIGKILL by an
  // OOM killer included); 0 for none.
  int death_signal = SIGKILL;
  // Variables set in the child's environment, on top of this process's.
  std::vector<std::pair<std::string, std::string>> env;
  // Who says "cannot execute ..." on the child's stderr when exec fails (the child exits 127).
  std::string who = "ctrain";
};

// Whether execvp would find `program` and could run it: a path (containing '/') to an
// executable regular file, or a name of one in a directory of `search_path` (PATH's syntax;
// an empty entry is the current directory). The caller passes PATH: nothing here reads the
// environment. A directory has its x bit too and fails at exec (EACCES): it is not executable.
bool executable_on(const std::string& program, const std::string& search_path);

class Process {
 public:
  Process() = default;
  // Starts argv[0] (searched on PATH, as execvp does) with `argv`, in a new process group, with
  // SIGINT and SIGTERM at their defaults. Throws ctrain::Error when it cannot fork.
  static Process spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  pid_t pid() const { return pid_; }
  // Started and not yet reaped by poll() or wait().
  bool running() const { return pid_ > 0 && !code_; }
  // Its exit code once it ended, without blocking: the code it exited with, or 128 + the
  // signal that killed it (what a shell reports). nullopt while it runs.
  std::optional<int> poll();
  // Blocks until it ends; its exit code as poll()'s.
  int wait();
  // Whether it ended by a signal (after poll() or wait() said it ended).
  bool signaled() const { return signaled_; }
  // Sends `sig` to its process group: the child and everything it started.
  void signal_group(int sig) const;

 private:
  void reaped(int status);
  pid_t pid_ = -1;
  std::optional<int> code_;
  bool signaled_ = false;
};

}  // namespace ctrain
