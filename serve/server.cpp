#include "serve/server.h"

#include <openssl/crypto.h>
#include <sys/resource.h>

#include <algorithm>
#include <system_error>

#include <boost/beast/http.hpp>

#include "serve/registry.h"  // sha256_hex
#include "serve/server_impl.h"

namespace ctrain::serve {

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
          s = session_make(std::move(socket), *this, over);
          sessions_.insert(s);
        }
      }
      if (s) session_start(*s);
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
    for (auto& s : sessions_) session_drain(*s);
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
      for (auto& s : sessions_) session_abort(*s);
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
    } else if (type == "application/x-npy") {
      rows = handler_.preprocess_npy(body);
    } else if (type == "image/jpeg" || type == "image/png") {
      rows = handler_.preprocess_image(body, "the request body (" + type + ")");
    } else {
      return answer(error_reply(415, "Content-Type '" + printable(type) +
                                         "' is not accepted: send application/json, application/x-npy, image/jpeg or image/png"));
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
