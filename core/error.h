#pragma once
// ctrain's one error type. Every message names the file, flag or value at fault and, where one
// exists, says what to do (the HINT), so a user never has to read the source to fix a run.
#include <stdexcept>
#include <string>

namespace ctrain {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, const std::string& hint = "")
      : std::runtime_error(hint.empty() ? what : what + "\n  hint: " + hint) {}
};

// A bad flag value or combination: apps map it to exit code 2 (usage), like a parse error.
class ConfigError : public Error {
 public:
  using Error::Error;
};

}  // namespace ctrain
