#include "serve/http.h"

#include <algorithm>
#include <cctype>
#include <iterator>
#include <limits>

namespace ctrain::serve {

namespace {

std::string lower_trimmed(boost::beast::string_view v) {
  std::string t(v.data(), v.size());
  t.erase(0, t.find_first_not_of(" \t"));
  t.erase(t.find_last_not_of(" \t") + 1);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}

}  // namespace

Route route_of(boost::beast::string_view target) {
  const auto path = target.substr(0, target.find('?'));
  if (path == "/health") return Route::kHealth;
  if (path == "/metadata") return Route::kMetadata;
  if (path == "/metrics") return Route::kMetrics;
  if (path == "/score") return Route::kScore;
  return Route::kNone;
}

std::string media_type(boost::beast::string_view header) {
  return lower_trimmed(header.substr(0, header.find(';')));
}

void set_head_limits(http::request_parser<http::string_body>& parser) {
  parser.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
}

void set_body_limit(http::request_parser<http::string_body>& parser, uint64_t max_body_bytes) {
  parser.body_limit(max_body_bytes);
}

std::optional<Refusal> check_head(const http::request_parser<http::string_body>::value_type& head,
                                  const GateOptions& options) {
  const auto fields = static_cast<size_t>(std::distance(head.begin(), head.end()));
  if (fields > kMaxHeaderFields) {
    return Refusal{431, std::to_string(fields) + " header fields; at most " + std::to_string(kMaxHeaderFields)};
  }
  const Route route = route_of(head.target());
  if (options.key_matches && route != Route::kHealth) {
    const auto auth = head[http::field::authorization];
    if (auth.empty()) return Refusal{401, "missing Authorization: Bearer <key>", true};
    const bool bearer = auth.size() >= 7 && auth.substr(0, 7) == "Bearer ";
    if (!bearer || !options.key_matches(auth.substr(7))) return Refusal{401, "wrong API key", true};
  }
  const char* kRoutes = " (POST /score; GET /health, /metadata, /metrics)";
  if (route == Route::kNone) return Refusal{404, "no such route" + std::string(kRoutes)};
  const bool post = head.method() == http::verb::post;
  const bool get = head.method() == http::verb::get;
  if ((route == Route::kScore && !post) || (route != Route::kScore && !get)) {
    return Refusal{405, "wrong method for this route" + std::string(kRoutes)};
  }
  const auto encoding = head[http::field::content_encoding];
  if (!encoding.empty() && lower_trimmed(encoding) != "identity") {
    return Refusal{415, "Content-Encoding is not accepted: send the body uncompressed"};
  }
  const auto transfer = head[http::field::transfer_encoding];
  if (!transfer.empty() && lower_trimmed(transfer) != "chunked") {
    return Refusal{501, "Transfer-Encoding other than chunked is not accepted"};
  }
  const auto length = head[http::field::content_length];
  if (!length.empty()) {
    // Beast has validated the digits; a value past 2^64 fails its parse before we get here.
    uint64_t n = 0;
    for (char c : length) {
      if (c < '0' || c > '9' || n > (UINT64_MAX - 9) / 10) return Refusal{400, "bad Content-Length"};
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    if (n > options.max_body_bytes) return Refusal{413, "the body is larger than --max-body-mb"};
  }
  return std::nullopt;
}

}  // namespace ctrain::serve
