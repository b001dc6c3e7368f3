#pragma once
// The launchers' wire between nodes (node_agent.h), below its protocol: a TCP connection that
// carries whole text lines, read without blocking, and the words of a line. Plain POSIX.
#include <chrono>
#include <string>
#include <vector>

namespace ctrain::distributed {

// One end of a connection: its socket, what it sent that is not a whole line yet, when it was
// last heard from.
struct Peer {
  int fd = -1;
  int node = -1;      // -1 until its HELLO
  std::string addr;   // its address, for messages
  std::string buf;
  std::chrono::steady_clock::time_point heard = std::chrono::steady_clock::now();
  bool done = false;  // said DONE
  bool closed = false;

  void close();
};

// Sends `line` and a newline; false (and the peer closed, on an error) when it cannot, waiting
// at most a second for a full send buffer (a peer that reads nothing is stuck).
bool send_line(Peer& p, const std::string& line);
// The whole lines the peer sent since the last call (never blocks); marks it closed on EOF, or
// when it sends more than 64 KB without a newline (not a launcher speaking).
std::vector<std::string> read_lines(Peer& p);
// Word i (0-based) of `line`, "" when it has fewer.
std::string word(const std::string& line, size_t i);
// The text after the first word.
std::string rest(const std::string& line);
void nonblocking(int fd);
// TCP_NODELAY: a heartbeat line goes out at once.
void keepalive(int fd);

}  // namespace ctrain::distributed
