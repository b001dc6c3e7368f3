#include "core/process.h"

#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/error.h"

namespace ctrain {
namespace {

bool executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

bool executable_on(const std::string& program, const std::string& search_path) {
  if (program.empty()) return false;
  if (program.find('/') != std::string::npos) return executable_file(program);
  std::istringstream dirs(search_path);
  for (std::string d; std::getline(dirs, d, ':');) {
    if (executable_file((std::filesystem::path(d.empty() ? "." : d) / program).string())) return true;
  }
  return false;
}

Process Process::spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw Error("no command to start");
  // Built before the fork: between fork and exec the child only makes system calls.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const std::string cannot = options.who + ": cannot execute " + argv[0] + ": ";
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error("cannot start " + argv[0] + ": fork: " + std::strerror(errno));
  if (pid == 0) {
    if (options.death_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, options.death_signal);
      if (::getppid() != parent) ::_exit(1);  // the parent died before the prctl took effect
    }
    ::setpgid(0, 0);
    if (options.output_fd >= 0) {
      ::dup2(options.output_fd, STDOUT_FILENO);
      ::dup2(options.output_fd, STDERR_FILENO);
    }
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    for (const auto& [name, value] : options.env) ::setenv(name.c_str(), value.c_str(), 1);
    ::execvp(cargv[0], cargv.data());
    const std::string err = cannot + std::strerror(errno) + "\n";
    (void)!::write(STDERR_FILENO, err.data(), err.size());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so a signal sent at once reaches the group
  Process p;
  p.pid_ = pid;
  return p;
}

void Process::reaped(int status) {
  signaled_ = WIFSIGNALED(status);
  code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::optional<int> Process::poll() {
  if (pid_ <= 0 || code_) return code_;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) reaped(status);
  return code_;
}

int Process::wait() {
  if (pid_ <= 0) throw Error("wait for a process that was not started");
  if (code_) return *code_;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) throw Error("waitpid " + std::to_string(pid_) + ": " + std::strerror(errno));
  reaped(status);
  return *code_;
}

void Process::signal_group(int sig) const {
  if (running()) ::kill(-pid_, sig);
}

}  // namespace ctrain
