#include "serve/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/json.h"
#include "serve/http.h"
#include "serve/registry.h"  // sha256_hex

namespace ctrain::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  bool authenticate = false;  // WWW-Authenticate: Bearer
  bool retry_after = false;   // Retry-After: 1
};

Reply json_reply(int status, const nlohmann::json& body) { return {status, json_dump(body)}; }
Reply error_reply(int status, const std::string& message) { return json_reply(status, {{"error", message}}); }

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
constexpr size_t kRefusalMargin = 64;
// JSON bodies up to this size are parsed on the I/O thread (well under a millisecond).
constexpr size_t kInlineJsonBytes = 64 * 1024;
constexpr size_t kOwnDescriptors = 64;

}  // namespace

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

namespace {

// A connection is closed after this many answers or this long, whatever its client does: a
// client sending a small request just inside every deadline cannot hold a slot forever.
constexpr int kMaxRequestsPerConnection = 1000;
constexpr std::chrono::minutes kMaxConnectionAge{5};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Server::Impl& server, bool over_capacity)
      : stream_(std::move(socket)), server_(server), over_capacity_(over_capacity), buffer_(kMaxReadBuffer) {
    beast::error_code ec;
    const auto remote = stream_.socket().remote_endpoint(ec);
    remote_ = ec ? "?" : remote.address().to_string();
    stream_.socket().set_option(tcp::no_delay(true), ec);  // else Nagle holds a reply for a delayed ACK
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->over_capacity_) {
        self->keep_alive_ = false;
        self->unread_ = true;
        Reply r = error_reply(503, "busy: " + std::to_string(self->server_.options_.max_connections) +
                                       " connections are open (--max-connections)");
        r.retry_after = true;
        self->write(std::move(r));
      } else {
        self->read_head();
      }
    });
  }

  // On stop(): a connection waiting for a request that has not begun is closed now; one in the
  // middle of a request keeps its deadline, and one being answered closes after the answer.
  void drain() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->state_ == State::kWaiting && !self->request_begun()) {
        beast::error_code ec;
        self->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        self->stream_.socket().close(ec);
      }
    });
  }

  // Closes the socket whatever it is doing (the drain's deadline).
  void abort() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->stream_.socket().close(ec);
    });
  }

 private:
  enum class State { kWaiting, kReading, kScoring, kWriting };

  std::chrono::seconds timeout() const { return std::chrono::seconds(server_.options_.timeout_s); }

  // Whether a request has begun: bytes of it read, or sent and waiting in the socket. The
  // latter counts too: a client that sent half a request just before a SIGTERM has begun it,
  // whether or not the read's completion has run yet, and its bytes would get a reset.
  bool request_begun() {
    if (buffer_.size() > 0 || (parser_ && parser_->got_some())) return true;
    beast::error_code ec;
    return stream_.socket().available(ec) > 0 && !ec;
  }

  void read_head() {
    state_ = State::kWaiting;
    parser_.emplace();
    set_head_limits(*parser_);
    // Stopping: as drain() does, close unless the client has begun the next request (a
    // connection accepted just before the stop, or answered as it came, gets here after it).
    if (server_.stopping_ && !request_begun()) return close();
    // One deadline for the whole request, head and body, from now (the connection waiting for
    // it included): it is not pushed back by bytes arriving, so a client trickling a byte a
    // second is dropped like a silent one.
    stream_.expires_after(timeout());
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_head(ec); });
  }

  void on_head(beast::error_code ec) {
    if (ec) return read_failed(ec);
    state_ = State::kReading;
    const auto& head = parser_->get();
    method_ = std::string(head.method_string());
    target_ = std::string(head.target());
    keep_alive_ = head.keep_alive();
    if (auto refusal = check_head(head, server_.gate_)) {
      keep_alive_ = false;  // the body, if any, stays unread
      unread_ = !parser_->is_done();
      Reply r = error_reply(refusal->status, refusal->message);
      r.authenticate = refusal->authenticate;
      return write(std::move(r));
    }
    const Route route = route_of(head.target());
    if (route != Route::kScore) {
      if (!parser_->is_done()) keep_alive_ = false, unread_ = true;  // a GET with a body: not read
      return write(answer_get(route));
    }
    if (!server_.requests_.try_acquire()) {
      keep_alive_ = false;
      unread_ = !parser_->is_done();
      Reply r = error_reply(503, "busy: " + std::to_string(server_.options_.http_threads) +
                                     " requests are being read or scored (--http-threads)");
      r.retry_after = true;
      return write(std::move(r));
    }
    holds_request_slot_ = true;
    started_ = Clock::now();
    set_body_limit(*parser_, server_.gate_.max_body_bytes);
    // curl and others send "Expect: 100-continue" with large bodies and wait (curl: 1 s) for
    // the interim answer before sending the body.
    if (beast::iequals(head[http::field::expect], "100-continue")) {
      continue_.emplace(http::status::continue_, 11);
      return http::async_write(stream_, *continue_, [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (ec) return read_failed(ec);
    state_ = State::kScoring;
    stream_.expires_never();  // the forward may queue; the answer's write gets its own deadline
    const auto& req = parser_->get();
    std::string type(req[http::field::content_type]);
    // The guard keeps the io threads running while no read or write of this connection is
    // pending: the answer still has to be written. Shared: std::function copies its target.
    auto guard = std::make_shared<net::executor_work_guard<beast::tcp_stream::executor_type>>(stream_.get_executor());
    auto answer = [self = shared_from_this(), guard](Reply r) {
      // Every /score answer counts in the latency histogram, errors included.
      self->server_.metrics_.latency(std::chrono::duration<double>(Clock::now() - self->started_).count());
      net::post(self->stream_.get_executor(), [self, r = std::move(r)]() mutable { self->write(std::move(r)); });
    };
    auto work = [self = shared_from_this(), type = std::move(type), answer]() {
      try {
        self->server_.score(type, self->parser_->get().body(), answer);
      } catch (const std::exception& e) {
        answer(error_reply(500, printable(e.what())));
      }
    };
    // A small JSON body (an MNIST input is ~6 KB) is parsed here, on the I/O thread: a hop to
    // the work pool and back costs more than the parse (benchmarks/RESULTS.md). Images and
    // large bodies go to the pool.
    if (req.body().size() <= kInlineJsonBytes && media_type(type) == "application/json") {
      work();
    } else {
      net::post(server_.work_, std::move(work));
    }
  }

  // A request that did not arrive whole: a parse error or a limit gets an answer, a timeout or
  // a hang-up just closes.
  void read_failed(beast::error_code ec) {
    keep_alive_ = false;
    if (ec == http::error::header_limit) {
      return write(error_reply(431, "the request head is larger than " + std::to_string(kMaxHeaderBytes) + " bytes"));
    }
    if (ec == http::error::body_limit) {
      unread_ = true;
      return write(error_reply(413, "the body is larger than --max-body-mb"));
    }
    if (ec == beast::error::timeout || ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset || ec == net::error::bad_descriptor ||
        ec == http::error::partial_message) {
      return close();
    }
    if (ec.category() == beast::error_code(http::error::bad_method).category()) {
      return write(error_reply(400, "malformed HTTP request: " + ec.message()));
    }
    return close();
  }

  Reply answer_get(Route route) {
    switch (route) {
      case Route::kHealth:
        return json_reply(200, {{"status", "ok"}});
      case Route::kMetadata: {
        nlohmann::json md = server_.handler_.metadata();
        md["name"] = server_.options_.model_name;
        md["max_batch"] = server_.options_.batcher.max_batch;
        return json_reply(200, md);
      }
      case Route::kMetrics:
        return {200, server_.metrics_.render(server_.batcher_->queued_rows()), "text/plain; version=0.0.4"};
      default:
        return error_reply(404, "no such route");
    }
  }

  void write(Reply r) {
    state_ = State::kWriting;
    if (holds_request_slot_) {
      holds_request_slot_ = false;
      server_.requests_.release();
    }
    if (server_.stopping_ || ++answered_ >= kMaxRequestsPerConnection || Clock::now() - born_ > kMaxConnectionAge) {
      keep_alive_ = false;
    }
    status_ = r.status;
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(http::field::server, "ctrain-serve");
    res_.set(http::field::content_type, r.content_type);
    if (r.authenticate) res_.set(http::field::www_authenticate, "Bearer");
    if (r.retry_after) res_.set(http::field::retry_after, "1");
    res_.body() = std::move(r.body);
    res_.keep_alive(keep_alive_);
    res_.prepare_payload();
    stream_.expires_after(timeout());
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) { self->on_written(ec); });
  }

  void on_written(beast::error_code ec) {
    const size_t body_bytes = parser_ ? parser_->get().body().size() : 0;
    if (!over_capacity_) server_.log(remote_, method_, target_, status_, body_bytes);
    if (ec) return close();
    if (unread_) return linger();
    if (!keep_alive_) return close();
    read_head();
  }

  // After a refusal with request bytes still unsent or unread: closing at once would make the
  // kernel answer them with a reset, which a client still sending sees instead of the refusal.
  // So: end our side, read and drop what comes for up to --timeout-s but at most 5 s (or 4 MB),
  // then close. Not a fixed second: a client on a loaded machine may take longer than that to
  // push the rest of a few-MB body. Both bounds keep a refused client from holding the slot.
  void linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    stream_.expires_after(std::min(timeout(), std::chrono::seconds(5)));
    scratch_.reset(new char[16384]);
    drop_some();
  }

  void drop_some() {
    stream_.async_read_some(net::buffer(scratch_.get(), 16384), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->dropped_ += n;
      if (ec || self->dropped_ > (4u << 20)) return self->close();
      self->drop_some();
    });
  }

  void close() {
    if (holds_request_slot_) {
      holds_request_slot_ = false;
      server_.requests_.release();
    }
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
    server_.finished(this);
  }

  beast::tcp_stream stream_;
  Server::Impl& server_;
  bool over_capacity_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::empty_body>> continue_;  // "100 Continue"
  http::response<http::string_body> res_;
  bool unread_ = false;  // the client may still be sending what we will not read
  std::unique_ptr<char[]> scratch_;
  size_t dropped_ = 0;
  int answered_ = 0;
  Clock::time_point born_ = Clock::now();
  State state_ = State::kWaiting;
  bool keep_alive_ = true;
  bool holds_request_slot_ = false;
  int status_ = 0;
  std::string remote_, method_, target_;
  Clock::time_point started_;
};

}  // namespace

Server::Impl::Impl(Handler& handler, ServeOptions options)
    : handler_(handler),
      options_(std::move(options)),
      acceptor_(net::make_strand(io_)),
      requests_(options_.http_threads) {
  if (!options_.api_key.empty()) {
    const std::string key_digest = sha256_hex(options_.api_key);
    // Digests of equal length compared in constant time: neither the key nor its length leaks
    // through the time a wrong guess takes.
    gate_.key_matches = [key_digest](boost::beast::string_view token) {
      const std::string d = sha256_hex(std::string_view(token.data(), token.size()));
      return CRYPTO_memcmp(d.data(), key_digest.data(), d.size()) == 0;
    };
  }
  gate_.max_body_bytes = static_cast<uint64_t>(options_.max_body_mb) << 20;
  batcher_ = std::make_unique<DynamicBatcher>(
      [this](const torch::Tensor& rows) { return handler_.infer(rows); }, options_.batcher,
      [this](int64_t rows) { metrics_.batch(rows); });
}

Server::Impl::~Impl() {
  io_.stop();
  batcher_->abandon();  // the work threads waiting on forwards get "shutting down" at once
  work_guard_.reset();
  join();
  batcher_.reset();
}

void Server::Impl::join() {
  for (auto& t : io_threads_) {
    if (t.joinable()) t.join();
  }
  work_guard_.reset();
  for (auto& t : work_threads_) {
    if (t.joinable()) t.join();
  }
}

void Server::Impl::start_threads() {
  const int io_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 2, 8);
  // Decodes and large JSON parses, one per core: 64 connections decoding together would
  // time-slice against the forward threads, and a parse of a 16 MB JSON body holds ~16x its
  // size in nodes, so this also bounds that memory. They never wait on a forward.
  const int work_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  work_guard_.emplace(net::make_work_guard(work_));
  try {
    for (int i = 0; i < work_threads; ++i) work_threads_.emplace_back([this] { work_.run(); });
    for (int i = 0; i < io_threads; ++i) io_threads_.emplace_back([this] { io_.run(); });
  } catch (const std::system_error& e) {
    const size_t started = io_threads_.size() + work_threads_.size();
    io_.stop();
    work_guard_.reset();
    join();
    throw Error("cannot start the service's threads (" + std::to_string(started) + " of " +
                    std::to_string(work_threads + io_threads) + " started): " + e.what(),
                "raise the limit on threads (ulimit -u, a container's pids limit)");
  }
}

void Server::Impl::accept() {
  acceptor_.async_accept(net::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;  // stop()
    if (!ec) {
      std::shared_ptr<Session> s;
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        const bool over = static_cast<int>(sessions_.size()) >= options_.max_connections;
        // Beyond the cap and a margin for refusals, even a refusal costs too much: the
        // connection is just closed.
        if (sessions_.size() < max_sessions_) {
          s = std::make_shared<Session>(std::move(socket), *this, over);
          sessions_.insert(s);
        }
      }
      if (s) s->start();
    } else {
      // Out of descriptors or memory: the connection stays in the backlog and the socket stays
      // readable, so accepting again at once would spin. Said once per pause.
      std::fprintf(stderr, "ctrain-serve: accept: %s (raise ulimit -n or lower --max-connections)\n", ec.message().c_str());
      return accept_later();
    }
    accept();
  });
}

void Server::Impl::accept_later() {
  accept_backoff_.emplace(acceptor_.get_executor(), std::chrono::milliseconds(100));
  accept_backoff_->async_wait([this](beast::error_code ec) {
    if (!ec && acceptor_.is_open()) accept();
  });
}

void Server::Impl::finished(Session* s) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->get() == s) {
      sessions_.erase(it);
      break;
    }
  }
  if (stopping_ && sessions_.empty() && drain_deadline_) drain_deadline_->cancel();
}

void Server::Impl::stop() {
  net::post(acceptor_.get_executor(), [this] {
    beast::error_code ec;
    acceptor_.close(ec);
    if (accept_backoff_) accept_backoff_->cancel();
  });
  net::post(io_, [this] {
    if (stopping_.exchange(true)) return;
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto& s : sessions_) s->drain();
    if (sessions_.empty()) return;
    // Every request still arriving has a deadline of --timeout-s; this one is a backstop for
    // an answer stuck behind a forward. Set and cancelled under sessions_mu_.
    drain_deadline_.emplace(io_, std::chrono::seconds(options_.timeout_s) + std::chrono::milliseconds(500));
    drain_deadline_->async_wait([this](beast::error_code ec) {
      if (ec) return;
      // Past the deadline: what is left is an answer waiting on a forward. The connections
      // close, serve() returns, and ~Impl fails the forwards still queued.
      std::fprintf(stderr, "ctrain-serve: drain deadline passed: closing the connections left\n");
      std::lock_guard<std::mutex> lock(sessions_mu_);
      for (auto& s : sessions_) s->abort();
      io_.stop();
    });
  });
}

void Server::Impl::score(const std::string& content_type, const std::string& body,
                         std::function<void(Reply)> answer) {
  const std::string type = media_type(content_type);
  torch::Tensor rows;
  // Forwards starting meanwhile wait for this one (while its body is parsed).
  DynamicBatcher::Arrival arrival = batcher_->expect();
  try {
    if (type == "application/json") {
      nlohmann::json parsed;
      try {
        parsed = json_parse(body, "the request body");
      } catch (const Error& e) {
        return answer(error_reply(400, e.what()));
      }
      if (!parsed.is_object() || !parsed.contains("data")) {
        return answer(error_reply(400, "expected a JSON object {\"data\": [...]} with input shape " +
                                           shape_string(handler_.input_shape())));
      }
      rows = handler_.preprocess_json(parsed["data"]);
    } else if (type == "image/jpeg" || type == "image/png") {
      rows = handler_.preprocess_image(body, "the request body (" + type + ")");
    } else {
      return answer(error_reply(415, "Content-Type '" + printable(type) +
                                         "' is not accepted: send application/json, image/jpeg or image/png"));
    }
  } catch (const BadInput& e) {
    return answer(error_reply(400, e.what()));
  }
  try {
    batcher_->submit(rows, &arrival, [this, answer](torch::Tensor probabilities, std::exception_ptr error) {
      try {
        if (error) std::rethrow_exception(error);
        nlohmann::json predictions = nlohmann::json::array();
        for (const Prediction& p : handler_.postprocess(probabilities)) {
          predictions.push_back({{"label", p.label}, {"probability", p.probability}});
        }
        answer(json_reply(200, {{"predictions", predictions}}));
      } catch (const QueueFull& e) {
        Reply r = error_reply(503, std::string("busy: ") + e.what());
        r.retry_after = true;
        answer(std::move(r));
      } catch (const std::exception& e) {
        answer(error_reply(500, printable(e.what())));
      }
    });
  } catch (const QueueFull& e) {
    Reply r = error_reply(503, std::string("busy: ") + e.what());
    r.retry_after = true;
    answer(std::move(r));
  }
}

Server::Server(Handler& handler, ServeOptions options) {
  if (options.port < 0 || options.port > 65535) throw ConfigError("--port must be in 0..65535");
  if (options.max_body_mb < 1 || options.max_body_mb > 4096) throw ConfigError("--max-body-mb must be in 1..4096");
  if (options.http_threads < 1 || options.http_threads > 4096) throw ConfigError("--http-threads must be in 1..4096");
  if (options.max_connections < 1 || options.max_connections > 65536) {
    throw ConfigError("--max-connections must be in 1..65536");
  }
  if (options.timeout_s < 1 || options.timeout_s > 3600) throw ConfigError("--timeout-s must be in 1..3600");
  // Each connection is a descriptor, the refusals beyond the cap too: a cap the process's
  // limit cannot hold would end in accept() failing instead of clear 503s.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY &&
      static_cast<rlim_t>(options.max_connections) + kRefusalMargin + kOwnDescriptors > files.rlim_cur) {
    throw ConfigError("--max-connections " + std::to_string(options.max_connections) + " needs about " +
                          std::to_string(options.max_connections + kRefusalMargin + kOwnDescriptors) +
                          " file descriptors; this process may open " + std::to_string(files.rlim_cur),
                      "lower --max-connections, or raise the limit (ulimit -n)");
  }
  impl_ = std::make_unique<Impl>(handler, std::move(options));
  Impl& s = *impl_;
  s.max_sessions_ = static_cast<size_t>(s.options_.max_connections) + kRefusalMargin;
  const std::string where = s.options_.host + ":" + std::to_string(s.options_.port);
  beast::error_code ec;
  const auto address = net::ip::make_address(s.options_.host == "localhost" ? "127.0.0.1" : s.options_.host, ec);
  if (ec) {
    throw ConfigError("--host " + s.options_.host + ": not an IP address", "use 127.0.0.1, 0.0.0.0 or ::");
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(s.options_.port));
  // SO_REUSEADDR lets a restarted service bind while the old one's connections sit in
  // TIME_WAIT; on Linux it never lets two listening sockets share a port (SO_REUSEPORT would,
  // and two services would split the traffic).
  s.acceptor_.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor_.bind(endpoint, ec);
  if (!ec) s.acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error("cannot listen on " + where + ": " + ec.message(),
                "is the port in use? pick another with --port (0: any free port)");
  }
  port_ = s.acceptor_.local_endpoint().port();
  s.accept();
  s.start_threads();
}

Server::~Server() = default;

void Server::serve() {
  for (auto& t : impl_->io_threads_) t.join();
}

void Server::stop() { impl_->stop(); }

}  // namespace ctrain::serve
