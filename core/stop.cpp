#include "core/stop.h"

#include <unistd.h>

#include <csignal>

namespace ctrain {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
int g_notify_fd = -1;

void on_stop_signal(int sig) {
  g_stop_signal = sig;
  if (g_notify_fd >= 0) {
    const unsigned char b = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = ::write(g_notify_fd, &b, 1);
  }
}

}  // namespace

void install_stop_handlers(const StopOptions& options) {
  g_notify_fd = options.notify_fd;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = options.second_kills ? SA_RESETHAND : 0;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() { return g_stop_signal; }

void throw_if_stopped(const std::string& where, const std::string& hint) {
  if (g_stop_signal == 0) return;
  throw Stopped(std::string("stopped by ") + (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") + " " + where, hint);
}

}  // namespace ctrain
