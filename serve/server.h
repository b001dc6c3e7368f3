#pragma once
// The scoring web service: HTTP (Boost.Beast on Asio, asynchronous) in front of the dynamic
// batcher in front of a Handler. Routes: POST /score, GET /health, GET /metadata, GET /metrics.
// A connection holds no thread while it waits on its client, so slow or idle clients cost a
// socket each and never delay /health; a request's whole arrival (head and body) is bounded
// by --timeout-s from when its connection starts waiting for it, which a trickling client
// cannot extend.
#include <memory>
#include <string>

#include "serve/batcher.h"
#include "serve/handler.h"
#include "serve/metrics.h"

namespace ctrain::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0: any free port
  int64_t max_body_mb = 16;        // larger bodies get 413
  int http_threads = 128;          // requests with a body being read or scored at once (503 beyond)
  int max_connections = 512;       // open connections; one more gets 503 and is closed (needs
                                   // about this + 128 descriptors: ulimit -n)
  int timeout_s = 10;              // a request must arrive (head and body) within this, else dropped
  std::string api_key;             // non-empty: every route but /health needs "Bearer <key>"
  bool access_log = false;         // one stderr line per request (never the key)
  std::string model_name;          // for the ready line and /metadata
  BatcherOptions batcher;
};

class Server {
 public:
  // Validates `options` (ctrain::ConfigError naming the flag), binds the port exclusively
  // (ctrain::Error naming host:port when it cannot: in use, or no such address) and starts
  // every thread (ctrain::Error with a hint when the system refuses one, e.g. ulimit -u).
  // Connections are accepted from here on.
  Server(Handler& handler, ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  // Blocks until stop() and the drain are done: idle connections are closed at once, the
  // requests in flight are answered, and one still arriving gets at most --timeout-s.
  void serve();
  // Stops accepting connections; safe from any thread (not from a signal handler).
  void stop();

  class Impl;  // the connections (serve/server.cpp)

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace ctrain::serve
