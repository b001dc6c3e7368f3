#pragma once
// The main() wrapper every program shares: one line per error, the exit codes scripts rely on.
// It knows core/ only (no engine), so every program uses it, ctrain-sweep included.
#include <functional>
#include <iostream>
#include <string>

#include "core/error.h"
#include "core/stop.h"
#include "core/torch_error.h"

namespace ctrain::apps {

// Runs `body`, mapping ctrain::ConfigError to exit code 2 (usage) and other errors to 1, each
// as one clear line prefixed with the program's name. A run stopped by SIGTERM/SIGINT exits
// 128 + signal, also when the stop surfaced as another error than a ConfigError (a rank whose
// peer stopped first sees its collective fail). The programs install the stop handlers (core/stop.h).
inline int guarded_main(const char* name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Stopped& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 128 + stop_signal();
  } catch (const std::exception& e) {
    if (dynamic_cast<const ConfigError*>(&e) != nullptr) {  // the settings are wrong, signal or not
      std::cerr << name << ": error: " << e.what() << "\n";
      return 2;
    }
    if (stop_signal() != 0) {
      std::cerr << name << ": stopped by signal " << stop_signal() << " (" << message_of(e) << ")\n";
      return 128 + stop_signal();
    }
    std::cerr << name << ": error: " << message_of(e) << "\n";
    return 1;
  }
}

}  // namespace ctrain::apps
