#pragma once
// A search space: named parameters, each drawn from one of HyperDrive's parameter expressions.
//   choice(v1, v2, ...) | choice(range(a, b[, step]))   one of the values (numbers or strings)
//   randint(upper)                 an integer in [0, upper)
//   uniform(lo, hi)                quniform(lo, hi, q)       = round(uniform / q) * q
//   loguniform(lo, hi)             = exp(uniform(lo, hi))    qloguniform(lo, hi, q)
//   normal(mu, sigma)              qnormal(mu, sigma, q)
//   lognormal(mu, sigma)           = exp(normal(mu, sigma))  qlognormal(mu, sigma, q)
// Values are JSON (numbers or strings), so a trial's parameters are one JSON object.
#include <cstdint>
#include <random>
#include <string>
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
  nlohmann::json from_internal(double u) const;
};

// Parses "name=expr". Throws ConfigError naming the parameter: unknown expression, wrong
// argument count, an empty choice, lo >= hi, sigma <= 0, q <= 0, upper < 1, bad numbers.
Param parse_param(const std::string& spec);

using Space = std::vector<Param>;

// The command-line form of a value: strings as they are, integral numbers without ".0", other
// numbers with the shortest text that reads back to the same double.
std::string format_value(const nlohmann::json& v);

}  // namespace ctrain::tune
