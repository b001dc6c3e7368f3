// TF_CONFIG (and the launch variables) come from the environment: any bytes must give either
// a LaunchInfo or a ctrain::ConfigError, nothing else.
#include <cstdint>
#include <string>

#include "core/error.h"
#include "distributed/launch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const auto env = [&](const std::string& k) -> std::optional<std::string> {
    if (k == "TF_CONFIG") return s;
    if (k == "MASTER_PORT" && size > 0 && data[0] == 'P') return s.substr(1);
    return std::nullopt;
  };
  try {
    ctrain::distributed::resolve_launch({}, env);
  } catch (const ctrain::ConfigError&) {
  }
  return 0;
}
