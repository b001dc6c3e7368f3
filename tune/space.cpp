#include "tune/space.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.h"

namespace ctrain::tune {
namespace {

// A value written in an expression: a number, or a (quoted or bare) string for choice().
struct Arg {
  nlohmann::json value;
  bool is_number() const { return value.is_number(); }
};

// Reads "func(arg, arg, ...)" where an arg is a number, a quoted or bare string, or a nested
// range(...). Hand-written: the grammar is a dozen lines and no library Debian ships parses
// Python-like call syntax.
class ExprParser {
 public:
  ExprParser(const std::string& text, const std::string& param) : s_(text), param_(param) {}

  std::pair<std::string, std::vector<Arg>> call() {
    const std::string name = word();
    if (name.empty()) fail("expected an expression such as uniform(0.01, 0.1)");
    expect('(');
    std::vector<Arg> args;
    skip();
    if (peek() != ')') {
      for (;;) {
        append(args);
        skip();
        if (peek() == ',') { ++i_; continue; }
        break;
      }
    }
    expect(')');
    skip();
    if (i_ != s_.size()) fail("unexpected text after ')': " + s_.substr(i_));
    return {name, args};
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw ConfigError("--param " + param_ + "=" + s_ + ": " + why,
                      "expressions: choice(...), randint(upper), uniform(lo,hi), quniform(lo,hi,q), "
                      "loguniform(lo,hi), qloguniform(lo,hi,q), normal(mu,sigma), qnormal(mu,sigma,q), "
                      "lognormal(mu,sigma), qlognormal(mu,sigma,q)");
  }
  void skip() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void expect(char c) {
    skip();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string word() {
    skip();
    const size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) ++i_;
    return s_.substr(b, i_ - b);
  }
  void append(std::vector<Arg>& out) {
    skip();
    const char c = peek();
    if (c == '\'' || c == '"') {
      const size_t end = s_.find(c, i_ + 1);
      if (end == std::string::npos) fail("unterminated string");
      out.push_back({s_.substr(i_ + 1, end - i_ - 1)});
      i_ = end + 1;
      return;
    }
    // A bare token: up to the next top-level ',' or ')'; "range(" opens a nested call.
    size_t end = i_;
    while (end < s_.size() && s_[end] != ',' && s_[end] != ')' && s_[end] != '(') ++end;
    std::string tok = s_.substr(i_, end - i_);
    while (!tok.empty() && std::isspace(static_cast<unsigned char>(tok.back()))) tok.pop_back();
    if (end < s_.size() && s_[end] == '(') {
      if (tok != "range") fail("only range(...) may appear inside an expression, not " + tok + "(");
      const size_t open = end;
      i_ = end + 1;
      std::vector<int64_t> r;
      for (;;) {
        skip();
        size_t e = i_;
        while (e < s_.size() && s_[e] != ',' && s_[e] != ')') ++e;
        r.push_back(integer(s_.substr(i_, e - i_)));
        i_ = e;
        if (peek() == ',') { ++i_; continue; }
        break;
      }
      expect(')');
      const std::string text = "range(" + s_.substr(open + 1, i_ - open - 1);
      if (r.size() < 1 || r.size() > 3) fail(text + " takes 1 to 3 arguments");
      // Python's range: integers, counted exactly (a double step of 1 does not advance at 1e17),
      // and its length known before a value is made.
      const int64_t start = r.size() == 1 ? 0 : r[0], stop = r.size() == 1 ? r[0] : r[1];
      const int64_t step = r.size() == 3 ? r[2] : 1;
      if (step == 0) fail(text + ": step must not be 0");
      const __int128 span = static_cast<__int128>(stop) - start;
      const __int128 count = step > 0 ? (span > 0 ? (span + step - 1) / step : 0)
                                      : (span < 0 ? (-span + (-static_cast<__int128>(step)) - 1) / -static_cast<__int128>(step) : 0);
      if (count == 0) fail(text + " is empty");
      if (count + static_cast<__int128>(out.size()) > static_cast<__int128>(kMaxChoices)) {
        fail(text + " has " + count_text(count) + " values; choice() takes at most " +
             std::to_string(kMaxChoices));
      }
      for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) {
        out.push_back({static_cast<int64_t>(start + static_cast<__int128>(k) * step)});
      }
      return;
    }
    if (tok.empty()) fail("empty argument");
    char* e = nullptr;
    const double d = std::strtod(tok.c_str(), &e);
    if (e != tok.c_str() && *e == '\0' && std::isfinite(d)) {
      const bool integral = tok.find_first_of(".eE") == std::string::npos;
      if (integral) out.push_back({static_cast<int64_t>(d)}); else out.push_back({d});
    } else {
      out.push_back({tok});  // a bare word: choice(relu, tanh)
    }
    i_ = end;
  }
  // A range() argument: an integer (1e17 and 100000000000000000 alike), exactly.
  int64_t integer(std::string t) const {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    char* e = nullptr;
    errno = 0;
    const long long n = std::strtoll(t.c_str(), &e, 10);
    if (!t.empty() && *e == '\0' && errno == 0) return n;
    const double d = number(t);
    // 2^63 is exact as a double; every integral double below it is an int64_t.
    if (std::floor(d) != d || !(std::fabs(d) < 9223372036854775808.0)) {
      fail("range() takes integers (as Python's range), not '" + t + "'");
    }
    return static_cast<int64_t>(d);
  }
  static std::string count_text(__int128 n) {
    std::string out;
    do {
      out.insert(out.begin(), static_cast<char>('0' + static_cast<int>(n % 10)));
      n /= 10;
    } while (n > 0);
    return out;
  }
  double number(std::string t) const {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    char* e = nullptr;
    const double d = std::strtod(t.c_str(), &e);
    if (t.empty() || *e != '\0' || !std::isfinite(d)) fail("not a number: '" + t + "'");
    return d;
  }

  std::string s_, param_;
  size_t i_ = 0;
};

double rounded(double x, double q) { return std::nearbyint(x / q) * q; }  // numpy's round: half to even

// The internal values a log kind may take: exp() of them is a positive normal double, so a
// trial never gets "--lr 0" (underflow) or "--lr inf"/"null" (overflow).
const double kLogMin = std::log(std::numeric_limits<double>::min());  // about -708.4
const double kLogMax = std::log(std::numeric_limits<double>::max());  // about 709.8
// How far a normal's draws are taken to reach when checking its range (a 6-sigma draw is
// rarer than 1 in 10^8; beyond it values are clamped).
constexpr double kNormalReach = 6;

}  // namespace

Param parse_param(const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("--param " + spec + ": expected NAME=EXPRESSION, e.g. learning-rate='loguniform(-6,-1)'");
  }
  Param p;
  p.name = spec.substr(0, eq);
  while (p.name.rfind("-", 0) == 0) p.name.erase(0, 1);  // "--lr=..." and "lr=..." alike
  p.expr = spec.substr(eq + 1);
  ExprParser parser(p.expr, p.name);
  auto [func, args] = parser.call();
  const auto bad = [&](const std::string& why) -> ConfigError {
    return ConfigError("--param " + p.name + "=" + p.expr + ": " + why);
  };
  static const std::map<std::string, std::pair<Kind, int>> kFuncs = {
      {"choice", {Kind::kChoice, -1}},        {"randint", {Kind::kRandint, 1}},
      {"uniform", {Kind::kUniform, 2}},       {"quniform", {Kind::kQuniform, 3}},
      {"loguniform", {Kind::kLoguniform, 2}}, {"qloguniform", {Kind::kQloguniform, 3}},
      {"normal", {Kind::kNormal, 2}},         {"qnormal", {Kind::kQnormal, 3}},
      {"lognormal", {Kind::kLognormal, 2}},   {"qlognormal", {Kind::kQlognormal, 3}}};
  const auto f = kFuncs.find(func);
  if (f == kFuncs.end()) throw bad("unknown expression '" + func + "'");
  p.kind = f->second.first;
  if (p.kind == Kind::kChoice) {
    if (args.empty()) throw bad("choice() needs at least one value");
    for (auto& a : args) p.choices.push_back(a.value);
    return p;
  }
  const int n = f->second.second;
  if (static_cast<int>(args.size()) != n) {
    throw bad(func + "() takes " + std::to_string(n) + " argument" + (n > 1 ? "s" : "") + ", got " +
              std::to_string(args.size()));
  }
  for (auto& a : args) {
    if (!a.is_number()) throw bad("'" + a.value.get<std::string>() + "' is not a number");
  }
  p.a = args[0].value.get<double>();
  if (n >= 2) p.b = args[1].value.get<double>();
  if (n == 3) p.q = args[2].value.get<double>();
  if (n == 3 && !(p.q > 0)) throw bad("q must be positive");
  if (p.kind == Kind::kRandint) {
    if (p.a < 1 || std::floor(p.a) != p.a) throw bad("randint(upper) needs an integer upper >= 1");
    if (p.a > 9007199254740992.0) throw bad("randint(upper) needs upper <= 2^53 (9007199254740992)");
    return p;
  }
  if (p.is_normal()) {
    if (!(p.b > 0)) throw bad("sigma must be positive");
  } else if (!(p.a < p.b)) {
    throw bad("lo must be below hi");
  }
  // The range drawn from, in internal space: it must be a finite double span, and for log
  // kinds exp() of it must neither overflow to inf nor underflow to 0.
  const auto [lo, hi] = p.internal_range();
  if (!std::isfinite(lo) || !std::isfinite(hi) || !std::isfinite(hi - lo)) {
    throw bad(std::string(p.is_normal() ? "mu +- 6 sigma" : "hi - lo") + " overflows double");
  }
  if (p.is_log() && (lo < kLogMin || hi > kLogMax)) {
    throw bad(std::string(p.is_normal() ? "exp(mu +- 6 sigma)" : "exp(lo) .. exp(hi)") +
              " leaves double's range (" + (hi > kLogMax ? "overflows to inf" : "underflows to 0") +
              "): the arguments are natural logs, between " + std::to_string(static_cast<int>(kLogMin)) + " and " +
              std::to_string(static_cast<int>(kLogMax)) + ", e.g. loguniform(-6, -1) for 0.0025 .. 0.37");
  }
  for (const double u : {lo, hi}) {
    const nlohmann::json v = p.from_internal(u);
    if (!std::isfinite(v.get<double>())) throw bad("q rounding of the range overflows double");
  }
  return p;
}

std::pair<double, double> Param::internal_range() const {
  if (is_normal()) return {a - kNormalReach * b, a + kNormalReach * b};
  return {a, b};
}

nlohmann::json Param::from_internal(double u) const {
  // parse_param checked that both ends map to finite values (exp and q rounding included), so
  // within them every value does; a normal's rare draw beyond 6 sigma is clamped to them.
  const auto [lo, hi] = internal_range();
  u = std::clamp(u, lo, hi);
  double v = is_log() ? std::exp(u) : u;
  if (q > 0) v = rounded(v, q);
  return v;
}

nlohmann::json Param::sample(std::mt19937_64& rng) const {
  switch (kind) {
    case Kind::kChoice: {
      std::uniform_int_distribution<size_t> d(0, choices.size() - 1);
      return choices[d(rng)];
    }
    case Kind::kRandint: {
      std::uniform_int_distribution<int64_t> d(0, static_cast<int64_t>(a) - 1);
      return d(rng);
    }
    case Kind::kUniform: case Kind::kQuniform: case Kind::kLoguniform: case Kind::kQloguniform: {
      std::uniform_real_distribution<double> d(a, b);
      return from_internal(d(rng));
    }
    default: {
      std::normal_distribution<double> d(a, b);
      return from_internal(d(rng));
    }
  }
}

std::string format_value(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    const double d = v.get<double>();
    if (!std::isfinite(d)) throw Error("a sampled value is not finite (" + std::to_string(d) + ")");
    if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    return nlohmann::json(d).dump();  // shortest text that reads back to the same double
  }
  return v.dump();
}

}  // namespace ctrain::tune
