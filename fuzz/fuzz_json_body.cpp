// The JSON layer every outside text goes through (core/json.h): any bytes must parse within the
// depth bound or raise ctrain::Error, and whatever parsed must print again (json_dump never
// throws on strings that are not UTF-8; printable() escapes anything).
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  (void)ctrain::is_utf8(s);
  (void)ctrain::printable(s);
  try {
    const nlohmann::json j = ctrain::json_parse(s, "the request body", 16);
    (void)ctrain::json_dump(j, 1);
    // The shape probe of Handler::preprocess_json: first elements down the nesting.
    size_t depth = 0;
    for (const nlohmann::json* p = &j; p->is_array() && !p->empty(); p = &(*p)[0]) ++depth;
    if (depth > 16) __builtin_trap();
  } catch (const ctrain::Error&) {
  }
  // A string that is not UTF-8 inside a value must still print.
  (void)ctrain::json_dump(nlohmann::json{{"path", std::string(s)}});
  return 0;
}
