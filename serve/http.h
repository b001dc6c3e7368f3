#pragma once
// What ctrain-serve decides about a request from its head alone, before any body byte is read
// or any handler runs: the parser's limits, the route, the API key, the encodings. Plain C++
// (Boost.Beast's header types, no LibTorch), so the fuzz target drives it without a model.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <boost/beast/http.hpp>

namespace ctrain::serve {

namespace http = boost::beast::http;

// The request head (request line and every header field) is read into at most this many bytes,
// and has at most kMaxHeaderFields fields: 1M headers once grew the server by 200 MB.
constexpr size_t kMaxHeaderBytes = 32 * 1024;
constexpr size_t kMaxHeaderFields = 100;

enum class Route { kNone, kHealth, kMetadata, kMetrics, kScore };

// The route of `target` ("/score?x=1" routes as "/score"); kNone when there is none.
Route route_of(boost::beast::string_view target);

// "application/json; charset=utf-8" -> "application/json" (lower case).
std::string media_type(boost::beast::string_view header);

// An answer given before the body is read (the connection is then closed: the body stays unread).
struct Refusal {
  int status = 400;
  std::string message;
  bool authenticate = false;  // add WWW-Authenticate: Bearer
};

struct GateOptions {
  uint64_t max_body_bytes = 16u << 20;
  // Empty: no key needed. Else true when the bearer token given is the key (the server compares
  // digests in constant time).
  std::function<bool(boost::beast::string_view token)> key_matches;
};

// The checks, in order: too many header fields (431); the API key on every route but /health
// (401: before anything else is said about the request); an unknown route or method (404, 405);
// a Content-Encoding other than identity, which would inflate past --max-body-mb (415); a
// Transfer-Encoding other than chunked (501); a declared Content-Length over the limit (413).
// A chunked body is held to the same limit while it is read (the parser's body_limit).
std::optional<Refusal> check_head(const http::request_parser<http::string_body>::value_type& head,
                                  const GateOptions& options);

// A fresh request parser's limits for the head (kMaxHeaderBytes), and no body limit yet: Beast
// would refuse a large Content-Length with 413 before check_head() asked for the API key.
void set_head_limits(http::request_parser<http::string_body>& parser);
// After check_head() passed: the body limit, which a chunked body is held to as it arrives.
void set_body_limit(http::request_parser<http::string_body>& parser, uint64_t max_body_bytes);

// Bytes a connection's read buffer may hold: a head, plus room for body bytes on their way to
// the parser. Without a cap, a chunk-size line or a trailer that never ends (Beast bounds
// neither) would grow the buffer for as long as the client sends.
constexpr size_t kMaxReadBuffer = 2 * kMaxHeaderBytes + 64 * 1024;

}  // namespace ctrain::serve
