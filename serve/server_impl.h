#pragma once
// Private to serve/: the server's state (Server::Impl), shared by server.cpp (accepting,
// stopping, scoring) and session.cpp (one connection's reads and writes).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>

#include "core/json.h"
#include "serve/http.h"
#include "serve/server.h"

namespace ctrain::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  bool authenticate = false;  // WWW-Authenticate: Bearer
  bool retry_after = false;   // Retry-After: 1
};

inline Reply json_reply(int status, const nlohmann::json& body) { return {status, json_dump(body)}; }
inline Reply error_reply(int status, const std::string& message) { return json_reply(status, {{"error", message}}); }

// At most `n` holders at once; a holder that cannot get in is refused, never queued.
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  bool try_acquire() {
    int f = free_.load();
    while (f > 0) {
      if (free_.compare_exchange_weak(f, f - 1)) return true;
    }
    return false;
  }
  void release() { ++free_; }

 private:
  std::atomic<int> free_;
};

class Session;

// Connections told 503 beyond --max-connections before they are just closed, and the
// descriptors the process needs besides its connections (model files, LibTorch, stdio).
inline constexpr size_t kRefusalMargin = 64;
// JSON bodies up to this size are parsed on the I/O thread (well under a millisecond).
inline constexpr size_t kInlineJsonBytes = 64 * 1024;
inline constexpr size_t kOwnDescriptors = 64;

// One connection (session.cpp), on its own strand. session_start() begins reading (or, over
// capacity, answers 503); session_drain() closes it if it waits for a request that has not
// begun; session_abort() closes it whatever it is doing. Each posts to the session's strand.
std::shared_ptr<Session> session_make(tcp::socket socket, Server::Impl& server, bool over_capacity);
void session_start(Session& s);
void session_drain(Session& s);
void session_abort(Session& s);

// The io threads run every connection's reads and writes and parse small JSON bodies; the
// work threads decode images and parse large bodies. Neither waits on a forward: the batcher
// calls back, and the answer is posted to the connection's strand. Each connection runs on
// its own strand.
class Server::Impl {
 public:
  Impl(Handler& handler, ServeOptions options);
  ~Impl();

  void start_threads();
  void accept();
  void accept_later();
  void stop();
  void join();
  // POST /score: `answer` is called once with the reply, from this thread (a bad request) or
  // from a forward thread (the batch's outputs).
  void score(const std::string& content_type, const std::string& body, std::function<void(Reply)> answer);
  void finished(Session* s);
  void log(const std::string& remote, const std::string& method, const std::string& target, int status, size_t bytes) {
    metrics_.count(status);
    if (options_.access_log) {
      // The target is shown with control bytes escaped: a client cannot forge a log line.
      std::fprintf(stderr, "%s %s %s %d %zu bytes\n", remote.c_str(), method.c_str(), printable(target).c_str(),
                   status, bytes);
    }
  }

  Handler& handler_;
  ServeOptions options_;
  GateOptions gate_;
  ServiceMetrics metrics_;
  std::unique_ptr<DynamicBatcher> batcher_;
  net::io_context io_;
  net::io_context work_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_guard_;
  tcp::acceptor acceptor_;          // on its own strand: stop() closes it from another thread
  std::optional<net::steady_timer> accept_backoff_;  // out of descriptors: retry later, not in a spin
  size_t max_sessions_ = 0;         // connections held: the cap, plus the ones told 503
  std::vector<std::thread> io_threads_, work_threads_;
  Slots requests_;  // bodies being read or scored: --http-threads
  std::mutex sessions_mu_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::atomic<bool> stopping_{false};
  std::optional<net::steady_timer> drain_deadline_;
};

}  // namespace ctrain::serve
