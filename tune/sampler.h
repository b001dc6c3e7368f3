#pragma once
// Samplers propose a trial's parameters; they never see processes or files (Optuna's split:
// a sampler proposes, a policy decides, a trial is a plain record). Every proposal is a
// function of (seed, trial index, finished trials), so a resumed sweep proposes what an
// uninterrupted one would have, given the same finished trials.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tune/space.h"

namespace ctrain::tune {

// A finished trial as a sampler sees it: its parameters and its best metric, oriented so that
// lower is better (a maximised metric is negated).
struct Observation {
  nlohmann::json params;
  double loss = 0.0;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The parameters (a JSON object, one key per space entry) of trial `index` (0-based).
  virtual nlohmann::json propose(int64_t index, const std::vector<Observation>& finished) = 0;
  // The most trials this sampler can propose (grid: the grid's size), or -1 for no limit.
  virtual int64_t capacity() const { return -1; }
};

// "random" | "grid" (choice parameters only; the last parameter varies fastest) | "tpe"
// (Tree-structured Parzen Estimator as in Optuna's TPESampler: 10 random start-up trials,
// then per parameter l(x)/g(x) over 24 candidates, gamma(n) = min(ceil(0.1 n), 25)).
// Throws ConfigError for an unknown name or a grid over a non-choice parameter.
std::unique_ptr<Sampler> make_sampler(const std::string& name, const Space& space, uint64_t seed);

// TPE's knobs, exposed for tests.
struct TpeOptions {
  int64_t startup_trials = 10;
  int64_t ei_candidates = 24;
  double prior_weight = 1.0;
};
std::unique_ptr<Sampler> make_tpe_sampler(const Space& space, uint64_t seed, TpeOptions options);

}  // namespace ctrain::tune
