#include "tune/space.h"

#include <cctype>
#include <cmath>
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
      i_ = end + 1;
      std::vector<double> r;
      for (;;) {
        skip();
        size_t e = i_;
        while (e < s_.size() && s_[e] != ',' && s_[e] != ')') ++e;
        r.push_back(number(s_.substr(i_, e - i_)));
        i_ = e;
        if (peek() == ',') { ++i_; continue; }
        break;
      }
      expect(')');
      if (r.size() < 1 || r.size() > 3) fail("range() takes 1 to 3 arguments");
      const double start = r.size() == 1 ? 0 : r[0], stop = r.size() == 1 ? r[0] : r[1];
      const double step = r.size() == 3 ? r[2] : 1;
      if (step == 0) fail("range() step must not be 0");
      for (double v = start; step > 0 ? v < stop : v > stop; v += step) {
        if (std::floor(v) == v) out.push_back({static_cast<int64_t>(v)}); else out.push_back({v});
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
  } else if (p.is_normal()) {
    if (!(p.b > 0)) throw bad("sigma must be positive");
  } else if (!(p.a < p.b)) {
    throw bad("lo must be below hi");
  }
  return p;
}

nlohmann::json Param::from_internal(double u) const {
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
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    const double d = v.get<double>();
    if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    return nlohmann::json(d).dump();  // shortest text that reads back to the same double
  }
  return v.dump();
}

}  // namespace ctrain::tune
