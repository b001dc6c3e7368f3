#pragma once
// The scoring web service: HTTP (cpp-httplib) in front of the dynamic batcher in front of a
// Handler. Routes: POST /score, GET /health, GET /metadata, GET /metrics.
#include <memory>
#include <string>

#include "serve/batcher.h"
#include "serve/handler.h"
#include "serve/metrics.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace ctrain::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0: any free port
  int64_t max_body_mb = 16;        // larger bodies get 413
  int http_threads = 128;          // connections served at once (each waits on its forward)
  int timeout_s = 10;              // a client silent this long mid-request is dropped
  std::string api_key;             // non-empty: every route but /health needs "Bearer <key>"
  bool access_log = false;         // one stderr line per request (never the key)
  std::string model_name;          // for the ready line and /metadata
  BatcherOptions batcher;
};

class Server {
 public:
  // Validates `options` (ctrain::ConfigError naming the flag) and binds; the port is bound
  // when this returns (ctrain::Error naming host:port when it cannot be).
  Server(Handler& handler, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  // Serves until stop(); then finishes the requests in flight and returns.
  void serve();
  // Stops accepting connections; safe from any thread (not from a signal handler).
  void stop();

 private:
  void score(const httplib::Request& req, httplib::Response& res);
  Handler& handler_;
  ServeOptions options_;
  ServiceMetrics metrics_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::unique_ptr<httplib::Server> http_;
  // Image decodes running at once, at most one per core: 64 connections decoding together
  // would time-slice against the forward threads and thrash the caches.
  std::mutex decode_mu_;
  std::condition_variable decode_cv_;
  int decode_slots_ = 1;
  int port_ = 0;
};

}  // namespace ctrain::serve
