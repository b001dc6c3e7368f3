#include <boost/beast/http.hpp>

#include "serve/server_impl.h"

namespace ctrain::serve {

namespace {

// A connection is closed after this many answers or this long, whatever its client does: a
// client sending a small request just inside every deadline cannot hold a slot forever.
constexpr int kMaxRequestsPerConnection = 1000;
constexpr std::chrono::minutes kMaxConnectionAge{5};

}  // namespace

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

std::shared_ptr<Session> session_make(tcp::socket socket, Server::Impl& server, bool over_capacity) {
  return std::make_shared<Session>(std::move(socket), server, over_capacity);
}

void session_start(Session& s) { s.start(); }
void session_drain(Session& s) { s.drain(); }
void session_abort(Session& s) { s.abort(); }

}  // namespace ctrain::serve
