#pragma once
// JSON for text that comes from outside (HTTP requests and paths, metrics files, model specs,
// file names, tags): the one place where such text is parsed or printed.
// nlohmann's dump() throws type_error.316 on a string that is not valid UTF-8 (a request path
// like "/%FF", a file name in Latin-1), and its parser recurses once per nesting level while
// allocating a node per value (16 MB of '[' took 1.2 GB). Both are bounded here.
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ctrain {

// Nesting a parse accepts by default: a ResNet batch is 4 levels deep ([N][3][H][W]).
constexpr size_t kMaxJsonDepth = 64;

// j.dump(indent), with every byte sequence that is not UTF-8 replaced by U+FFFD: never throws.
std::string json_dump(const nlohmann::json& j, int indent = -1);

// `s` with invalid UTF-8 replaced by U+FFFD and control characters (CR, LF, ESC...) shown as
// \xNN, for messages and log lines that echo text from outside (no forged log lines).
std::string printable(std::string_view s);

// True when `s` is valid UTF-8.
bool is_utf8(std::string_view s);

// The deepest nesting of arrays and objects in `text` (strings skipped), scanning at most until
// it passes `limit`. O(n), allocates nothing.
size_t json_depth(std::string_view text, size_t limit = kMaxJsonDepth);

// Parses text from outside. Throws ctrain::Error naming `what` for malformed JSON (invalid
// UTF-8 included) and for nesting deeper than `max_depth`, before building anything.
nlohmann::json json_parse(std::string_view text, const std::string& what, size_t max_depth = kMaxJsonDepth);

}  // namespace ctrain
