#pragma once
// File-system helpers shared by every folder that writes results (engine, export).
#include <cstdint>
#include <string>
#include <string_view>

namespace ctrain {

// Writes `bytes` to `path` so that a reader sees either the old file or the complete new one,
// never a torn one: write to a temp file in the same directory, fsync it, rename over `path`,
// fsync the directory. Throws ctrain::Error naming the path on any failure (disk full, EACCES);
// the temp file is removed on failure and `path` is left untouched.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole file; throws ctrain::Error naming the path if it cannot.
std::string read_file(const std::string& path);

// Creates `dir` (and parents) and checks that a file can be created in it, so an unwritable
// output directory is reported before training starts rather than at the first checkpoint.
void ensure_writable_dir(const std::string& dir);

// Throws ctrain::Error naming `dir` when its file system has less than `need` bytes available
// for `what` ("the first checkpoint and model.pt"), so a full disk is reported before training.
// Returns the bytes available.
uint64_t ensure_free_space(const std::string& dir, uint64_t need, const std::string& what);

// "2.8 MB": a size for messages.
std::string megabytes(uint64_t bytes);

}  // namespace ctrain
