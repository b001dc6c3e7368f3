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

// A test's interruption of write_file_atomic: once `fraction` (in (0, 1)) of a file's bytes are
// in its temp file, and synced, `action` runs (the fault tests kill the process there, as a
// power cut or `kill -9` would). Installed by the programs from the fault tests' environment
// (apps/common/test_faults.h) or by a test itself; a fraction outside (0, 1) removes it.
void set_write_interruption(double fraction, void (*action)());

// What read_file reads at most unless its caller says otherwise: above the largest checkpoint a
// ctrain model writes (ResNet-152 with its optimizer state is under 1 GB).
constexpr uint64_t kReadFileLimit = uint64_t{4} << 30;

// Reads a whole regular file of at most `max_bytes`. Throws ctrain::Error naming the path when
// it is missing or unreadable, when it is a directory, a device, a FIFO or a socket (refused
// before a byte is read: /dev/zero would fill memory, a FIFO would block forever), or when it
// holds more than `max_bytes` (a caller that expects a small file passes a small cap).
std::string read_file(const std::string& path, uint64_t max_bytes = kReadFileLimit);

// Throws ctrain::Error naming `what` (a flag such as "--resume-from", or "" for none) and
// `path` unless `path` is a regular file (after symlinks). Opens nothing, so a FIFO cannot block.
void require_regular_file(const std::string& path, const std::string& what = "");

// Cuts an unterminated last line off a line-oriented file before it is appended to: a writer
// killed mid-line leaves one, and the next line would be glued onto it. Returns the number of
// bytes removed (0 when the file ends in a newline, is empty or does not exist).
uint64_t drop_torn_last_line(const std::string& path);

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
