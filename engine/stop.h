#pragma once
// Stopping a run from outside (ctrain-sweep's early termination, a scheduler's preemption,
// Ctrl-C): SIGTERM or SIGINT sets a flag that train() and evaluate() read between steps, so a
// run stops within one step, never inside a checkpoint write, and its last good checkpoint
// stays as it was. A second signal takes the default action (kills at once).
#include <string>

#include "core/error.h"

namespace ctrain::engine {

// Installs the SIGTERM/SIGINT handlers. Apps call it once, before training starts.
void install_stop_handlers();

// The signal that asked the run to stop, or 0.
int stop_signal();

// Thrown by train()/evaluate() at the first step boundary after a stop signal. Apps exit with
// 128 + signal, the code a shell reports for a process killed by that signal.
class Stopped : public Error {
 public:
  using Error::Error;
};

// Throws Stopped("stopped by SIGTERM <where>", hint) when a stop signal has arrived.
void throw_if_stopped(const std::string& where, const std::string& hint = "");

}  // namespace ctrain::engine
