#include "distributed/line_channel.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <sstream>

namespace ctrain::distributed {

void Peer::close() {
  if (fd >= 0) ::close(fd);
  fd = -1;
  closed = true;
}

bool send_line(Peer& p, const std::string& line) {
  if (p.fd < 0) return false;
  const std::string msg = line + "\n";
  size_t sent = 0;
  while (sent < msg.size()) {
    const ssize_t n = ::send(p.fd, msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {  // a full buffer: the peer is stuck
      pollfd f{p.fd, POLLOUT, 0};
      if (::poll(&f, 1, 1000) <= 0) return false;
      continue;
    }
    if (n <= 0) {
      p.close();
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::vector<std::string> read_lines(Peer& p) {
  std::vector<std::string> lines;
  if (p.fd < 0) return lines;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(p.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      p.buf.append(buf, static_cast<size_t>(n));
      p.heard = std::chrono::steady_clock::now();
      if (p.buf.size() > 65536) {  // not a launcher speaking
        p.close();
        break;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) p.close();
    break;
  }
  size_t nl;
  while ((nl = p.buf.find('\n')) != std::string::npos) {
    lines.push_back(p.buf.substr(0, nl));
    p.buf.erase(0, nl + 1);
  }
  return lines;
}

std::string word(const std::string& line, size_t i) {
  std::istringstream in(line);
  std::string w;
  for (size_t k = 0; k <= i; ++k) {
    if (!(in >> w)) return "";
  }
  return w;
}

std::string rest(const std::string& line) {
  const size_t sp = line.find(' ');
  return sp == std::string::npos ? "" : line.substr(sp + 1);
}

void nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void keepalive(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace ctrain::distributed
