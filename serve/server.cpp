#include "serve/server.h"

#include <httplib.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "serve/registry.h"  // sha256_hex

namespace ctrain::serve {
namespace {

using Clock = std::chrono::steady_clock;

// Debian's libcpp-httplib is compiled with a listen backlog of 5: 64 clients connecting at
// once would see SYNs dropped and retried a second later. listen() again on the bound socket
// raises it (Linux updates the backlog of a listening socket).
class WideBacklogServer : public httplib::Server {
 public:
  void widen_backlog() { ::listen(svr_sock_, SOMAXCONN); }
};

void answer(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void error(httplib::Response& res, int status, const std::string& message) {
  answer(res, status, {{"error", message}});
}

// "application/json; charset=utf-8" -> "application/json".
std::string media_type(const std::string& header) {
  std::string t = header.substr(0, header.find(';'));
  t.erase(0, t.find_first_not_of(" \t"));
  t.erase(t.find_last_not_of(" \t") + 1);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}

}  // namespace

Server::Server(Handler& handler, ServeOptions options) : handler_(handler), options_(std::move(options)) {
  if (options_.port < 0 || options_.port > 65535) throw ConfigError("--port must be in 0..65535");
  if (options_.max_body_mb < 1 || options_.max_body_mb > 65536) throw ConfigError("--max-body-mb must be in 1..65536");
  if (options_.http_threads < 1 || options_.http_threads > 4096) throw ConfigError("--http-threads must be in 1..4096");
  if (options_.timeout_s < 1 || options_.timeout_s > 3600) throw ConfigError("--timeout-s must be in 1..3600");
  decode_slots_ = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  batcher_ = std::make_unique<DynamicBatcher>(
      [this](const torch::Tensor& rows) { return handler_.infer(rows); }, options_.batcher,
      [this](int64_t rows) { metrics_.batch(rows); });

  auto http = std::make_unique<WideBacklogServer>();
  const int threads = options_.http_threads;
  http->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http->set_tcp_nodelay(true);  // else Nagle holds the body behind the headers for a delayed ACK
  http->set_payload_max_length(static_cast<size_t>(options_.max_body_mb) << 20);
  http->set_read_timeout(options_.timeout_s);
  http->set_write_timeout(options_.timeout_s);
  http->set_keep_alive_max_count(1000);
  http->set_keep_alive_timeout(5);

  const std::string key_digest = options_.api_key.empty() ? "" : sha256_hex(options_.api_key);
  http->set_pre_routing_handler([this, key_digest](const httplib::Request& req, httplib::Response& res) {
    if (key_digest.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string given = auth.rfind("Bearer ", 0) == 0 ? auth.substr(7) : std::string();
    // Digests of equal length compared in constant time: neither the key nor its length
    // leaks through the time a wrong guess takes.
    const std::string d = sha256_hex(given);
    if (auth.empty() || CRYPTO_memcmp(d.data(), key_digest.data(), d.size()) != 0) {
      res.set_header("WWW-Authenticate", "Bearer");
      error(res, 401, auth.empty() ? "missing Authorization: Bearer <key>" : "wrong API key");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count(res.status);
    if (options_.access_log) {
      std::fprintf(stderr, "%s %s %s %d %zu bytes\n", req.remote_addr.c_str(), req.method.c_str(),
                   req.path.c_str(), res.status, req.body.size());
    }
  });
  http->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    error(res, 500, what);
  });
  http->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a route's own error answer
    switch (res.status) {
      case 404: error(res, 404, "no route " + req.method + " " + req.path + " (POST /score, GET /health, /metadata, /metrics)"); break;
      case 413: error(res, 413, "the body is larger than --max-body-mb"); break;
      default: error(res, res.status, "HTTP " + std::to_string(res.status)); break;
    }
  });

  http->Get("/health", [](const httplib::Request&, httplib::Response& res) { answer(res, 200, {{"status", "ok"}}); });
  http->Get("/metadata", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json md = handler_.metadata();
    md["name"] = options_.model_name;
    md["max_batch"] = options_.batcher.max_batch;
    answer(res, 200, md);
  });
  http->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(batcher_->queued_rows()), "text/plain; version=0.0.4");
  });
  http->Post("/score", [this](const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    score(req, res);
    metrics_.latency(std::chrono::duration<double>(Clock::now() - start).count());
  });

  port_ = options_.port == 0 ? http->bind_to_any_port(options_.host)
                             : (http->bind_to_port(options_.host, options_.port) ? options_.port : -1);
  if (port_ < 0) {
    throw Error("cannot listen on " + options_.host + ":" + std::to_string(options_.port),
                "is the port in use? pick another with --port (0: any free port)");
  }
  http->widen_backlog();
  http_ = std::move(http);
}

Server::~Server() {
  http_.reset();     // joins the connection threads first: they wait on the batcher
  batcher_.reset();
}

void Server::score(const httplib::Request& req, httplib::Response& res) {
  auto arrival = batcher_->expect();  // forwards starting meanwhile wait for this one
  const std::string type = media_type(req.get_header_value("Content-Type"));
  torch::Tensor rows;
  try {
    if (type == "application/json") {
      nlohmann::json body;
      try {
        body = nlohmann::json::parse(req.body);
      } catch (const nlohmann::json::exception& e) {
        return error(res, 400, std::string("malformed JSON: ") + e.what());
      }
      if (!body.is_object() || !body.contains("data")) {
        return error(res, 400, "expected a JSON object {\"data\": [...]} with input shape " +
                                   shape_string(handler_.input_shape()));
      }
      rows = handler_.preprocess_json(body["data"]);
    } else if (type == "image/jpeg" || type == "image/png") {
      {
        std::unique_lock<std::mutex> lock(decode_mu_);
        decode_cv_.wait(lock, [&] { return decode_slots_ > 0; });
        --decode_slots_;
      }
      struct Release {
        Server* s;
        ~Release() {
          {
            std::lock_guard<std::mutex> lock(s->decode_mu_);
            ++s->decode_slots_;
          }
          s->decode_cv_.notify_one();
        }
      } release{this};
      rows = handler_.preprocess_image(req.body, "the request body (" + type + ")");
    } else {
      return error(res, 415, "Content-Type '" + type + "' is not accepted: send application/json, image/jpeg or image/png");
    }
  } catch (const BadInput& e) {
    return error(res, 400, e.what());
  }
  std::future<torch::Tensor> probabilities;
  try {
    probabilities = batcher_->submit(rows, &arrival);
  } catch (const QueueFull& e) {
    res.set_header("Retry-After", "1");
    return error(res, 503, std::string("busy: ") + e.what());
  }
  nlohmann::json predictions = nlohmann::json::array();
  for (const Prediction& p : handler_.postprocess(probabilities.get())) {
    predictions.push_back({{"label", p.label}, {"probability", p.probability}});
  }
  answer(res, 200, {{"predictions", predictions}});
}

void Server::serve() {
  http_->listen_after_bind();
}

void Server::stop() {
  http_->stop();
}

}  // namespace ctrain::serve
