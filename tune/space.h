#pragma once
// A search space: named parameters, each drawn from one of HyperDrive's parameter expressions.
//   choice(v1, v2, ...) | choice(range(a, b[, step]))   one of the values (numbers or strings)
//   randint(upper)                 an integer in [0, upper)
//   uniform(lo, hi)                quniform(lo, hi, q)       = round(uniform / q) * q
//   loguniform(lo, hi)             = exp(uniform(lo, hi))    qloguniform(lo, hi, q)
//   normal(mu, sigma)              qnormal(mu, sigma, q)
//   lognormal(mu, sigma)           = exp(normal(mu, sigma))  qlognormal(mu, sigma, q)
// Values are JSON (numbers or strings), so a trial's parameters are one JSON object.
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctrain::tune {

enum class Kind {
  kChoice, kRandint, kUniform, kQuniform, kLoguniform, kQloguniform,
  kNormal, kQnormal, kLognormal, kQlognormal
};

struct Param {
  std::string name;         // the trainer's flag without "--" (learning-rate)
  std::string expr;         // as written, for messages and sweep.json
  Kind kind = Kind::kUniform;
  std::vector<nlohmann::json> choices;  // kChoice
  double a = 0, b = 0;      // lo/hi, or mu/sigma, or upper (randint)
  double q = 0;             // the q of q* kinds

  // Draws one value. Integral results (randint, choice of ints) are JSON integers; q* kinds
  // give numbers that are printed without a trailing ".0" when integral (--batch-size 64).
  nlohmann::json sample(std::mt19937_64& rng) const;
  bool is_log() const { return kind == Kind::kLoguniform || kind == Kind::kQloguniform ||
                               kind == Kind::kLognormal || kind == Kind::kQlognormal; }
  bool is_normal() const { return kind == Kind::kNormal || kind == Kind::kQnormal ||
                                  kind == Kind::kLognormal || kind == Kind::kQlognormal; }
  // Maps an internal value (the uniform's or normal's draw, in log space for log kinds) to the
  // parameter's value: exp for log kinds, then the q rounding.
  // u is clamped to internal_range() first, so the value is always a finite number.
  nlohmann::json from_internal(double u) const;
  // The internal values a draw may take: [lo, hi] (log space for log kinds), mu +- 6 sigma for
  // the normal kinds.
  std::pair<double, double> internal_range() const;
};

// The most values one choice() may list, range()s expanded: range() counts its values before
// making them, so choice(range(0, 1e9)) is refused rather than filling memory.
constexpr size_t kMaxChoices = 10000;

// Parses "name=expr". Throws ConfigError naming the parameter and the expression: unknown
// expression, wrong argument count, an empty choice, lo >= hi, sigma <= 0, q <= 0, upper < 1
// or above 2^53, bad numbers; a range() that is empty, takes non-integers or has more than
// kMaxChoices values; a range whose span overflows double, and for the log kinds one whose
// exp() overflows to inf or underflows to 0 (lognormal: mu +- 6 sigma), so no trial is ever
// passed "--lr null" or "--lr 0".
Param parse_param(const std::string& spec);

using Space = std::vector<Param>;

// The command-line form of a value: strings as they are, integral numbers without ".0", other
// numbers with the shortest text that reads back to the same double. Throws ctrain::Error for
// a non-finite number (JSON would print it as null).
std::string format_value(const nlohmann::json& v);

}  // namespace ctrain::tune
