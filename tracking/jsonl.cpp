#include "tracking/jsonl.h"

#include <cstdint>

#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"

namespace ctrain::tracking {

namespace {

// `line` with Python's bare NaN, Infinity and -Infinity (outside strings) replaced by null;
// false when there are none.
bool python_non_finite_to_null(std::string_view line, std::string* out) {
  bool in_string = false, escaped = false, found = false;
  out->clear();
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      *out += c;
      continue;
    }
    if (c == '"') in_string = true;
    size_t n = 0;
    if (line.compare(i, 3, "NaN") == 0) n = 3;
    else if (line.compare(i, 8, "Infinity") == 0) n = 8;
    else if (line.compare(i, 9, "-Infinity") == 0) n = 9;
    if (n > 0) {
      *out += "null";
      i += n - 1;
      found = true;
      continue;
    }
    *out += c;
  }
  return found;
}

constexpr uint64_t kMaxJsonlBytes = uint64_t{256} << 20;

}  // namespace

nlohmann::json parse_jsonl_line(std::string_view line, const std::string& what) {
  nlohmann::json j;
  try {
    j = json_parse(line, what);
  } catch (const Error&) {
    std::string fixed;
    if (!python_non_finite_to_null(line, &fixed)) throw;
    j = json_parse(fixed, what);
  }
  if (!j.is_object()) throw Error(what + ": not a JSON object (" + std::string(j.type_name()) + ")");
  return j;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path, bool allow_torn_last_line,
                                       std::vector<std::string>* skipped) {
  std::string text;
  try {
    text = read_file(path, kMaxJsonlBytes);
  } catch (const Error& e) {
    throw Error(e.what(), "is it a run (metrics.jsonl) or sweep (sweep.jsonl) directory?");
  }
  std::vector<std::pair<int, std::string_view>> lines;  // (line number, text) of non-blank lines
  int number = 1;
  bool last_terminated = true;  // a torn line is the last one, with no newline after it
  for (size_t start = 0; start < text.size(); ++number) {
    size_t end = text.find('\n', start);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      lines.emplace_back(number, line);
      last_terminated = terminated;
    }
    start = end + 1;
  }
  std::vector<nlohmann::json> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = printable(path) + ":" + std::to_string(lines[i].first);
    try {
      out.push_back(parse_jsonl_line(lines[i].second, where));
    } catch (const Error& e) {
      if (allow_torn_last_line && i + 1 == lines.size() && !last_terminated) break;
      if (skipped == nullptr) throw;
      skipped->push_back(e.what());
    }
  }
  return out;
}

}  // namespace ctrain::tracking
