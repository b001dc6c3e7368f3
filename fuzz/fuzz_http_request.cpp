// ctrain-serve's request head path: any bytes through Beast's parser with the service's limits,
// then the gate (route, API key, encodings, declared size) and, for a complete JSON body, the
// bounded JSON parse. Each input must end in a refusal, a parse error or a request, nothing else.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/json.h"
#include "serve/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace http = ctrain::serve::http;
  http::request_parser<http::string_body> parser;
  ctrain::serve::set_head_limits(parser);
  boost::beast::error_code ec;
  size_t at = 0;
  // As bytes arrive from a socket: the head first (put stops after it), the gate, then the body.
  ctrain::serve::GateOptions gate;
  gate.max_body_bytes = 1 << 16;
  gate.key_matches = [](boost::beast::string_view token) { return token == "key"; };
  bool gated = false;
  while (at < size && !parser.is_done()) {
    if (parser.is_header_done() && !gated) {
      gated = true;
      if (ctrain::serve::check_head(parser.get(), gate)) return 0;
      ctrain::serve::set_body_limit(parser, gate.max_body_bytes);
    }
    const size_t n = parser.put(boost::asio::buffer(data + at, size - at), ec);
    if (ec == http::error::need_more) {
      ec = {};
      break;
    }
    if (ec || n == 0) break;
    at += n;
  }
  if (!ec && !parser.is_done() && parser.is_header_done()) parser.put_eof(ec);
  if (ec || !parser.is_header_done()) return 0;
  const auto refusal = ctrain::serve::check_head(parser.get(), gate);
  (void)ctrain::printable(std::string(parser.get().target()));
  if (refusal || !parser.is_done()) return 0;
  try {
    const auto j = ctrain::json_parse(parser.get().body(), "the request body");
    (void)ctrain::json_dump(j);
  } catch (const ctrain::Error&) {
  }
  return 0;
}
