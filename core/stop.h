#pragma once
// Stopping a program from outside (ctrain-sweep's early termination, a scheduler's preemption,
// Ctrl-C), written once for every program: SIGTERM or SIGINT sets a flag that the program reads
// where it can stop cleanly (a trainer between steps, never inside a checkpoint write; a
// launcher or a sweep in its supervision loop; a server through a pipe it watches).
#include <string>

#include "core/error.h"

namespace ctrain {

struct StopOptions {
  // A second signal takes its default action (kills at once): for trainers, whose clean stop
  // waits for a step. Launchers and sweeps keep stopping their children instead.
  bool second_kills = true;
  // When >= 0, the handler also writes the signal's number (one byte) to this fd: a thread
  // blocked reading its pipe wakes up (what async-signal safety allows a handler to do).
  int notify_fd = -1;
};

// Installs the SIGTERM/SIGINT handlers. Programs call it once, before their work starts.
void install_stop_handlers(const StopOptions& options = {});

// The signal that asked the program to stop, or 0.
int stop_signal();

// Thrown at the first clean stopping point after a stop signal (train()/evaluate() between
// steps). Programs exit with 128 + signal, the code a shell reports for a process killed by it.
class Stopped : public Error {
 public:
  using Error::Error;
};

// Throws Stopped("stopped by SIGTERM <where>", hint) when a stop signal has arrived.
void throw_if_stopped(const std::string& where, const std::string& hint = "");

}  // namespace ctrain
