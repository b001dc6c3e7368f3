#pragma once
// JSON-lines files written by ctrain and read back by the reports, the sweep and the registry:
// metrics.jsonl, sweep.jsonl, journal.jsonl. Readers are lenient where a writer can be
// interrupted (a torn last line) and where Python wrote the file (bare NaN / Infinity).
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::tracking {

// The JSON objects of a JSON-lines file. Throws ctrain::Error naming the file and line for a
// missing file, one that is not a regular file or is over 256 MB, or a line that is not a JSON
// object. Blank lines are skipped. With `allow_torn_last_line`, a last line that does not
// parse and has no newline after it is dropped instead: a writer killed mid-append leaves one
// (ctrain-sweep's journal after SIGKILL). With `skipped`, a line that is not a JSON object is left out and described there
// ("PATH:LINE: why") instead of thrown, for readers that show what they can (reports).
// Python's json writes NaN, Infinity and -Infinity for non-finite floats: those read as null.
std::vector<nlohmann::json> read_jsonl(const std::string& path, bool allow_torn_last_line = false,
                                       std::vector<std::string>* skipped = nullptr);

// One line of a JSON-lines file from outside (a trainer's metrics.jsonl): a JSON object, with
// Python's bare NaN / Infinity / -Infinity read as null. Throws ctrain::Error naming `what`
// (e.g. "trials/003/metrics.jsonl:4") for malformed JSON, nesting deeper than 64 and a value
// that is not an object.
nlohmann::json parse_jsonl_line(std::string_view line, const std::string& what);

}  // namespace ctrain::tracking
