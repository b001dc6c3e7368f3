#include "tune/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"

namespace ctrain::tune {
namespace {

// One generator per trial, from (seed, index): proposals never depend on how many draws
// earlier trials took, so resuming a sweep replays the same sequence.
std::mt19937_64 trial_rng(uint64_t seed, int64_t index, uint64_t salt = 0) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(salt)};
  return std::mt19937_64(seq);
}

class RandomSampler : public Sampler {
 public:
  RandomSampler(Space space, uint64_t seed) : space_(std::move(space)), seed_(seed) {}
  nlohmann::json propose(int64_t index, const std::vector<Observation>&) override {
    auto rng = trial_rng(seed_, index);
    nlohmann::json p = nlohmann::json::object();
    for (const Param& param : space_) p[param.name] = param.sample(rng);
    return p;
  }

 private:
  Space space_;
  uint64_t seed_;
};

class GridSampler : public Sampler {
 public:
  explicit GridSampler(Space space) : space_(std::move(space)) {
    for (const Param& p : space_) {
      if (p.kind != Kind::kChoice) {
        throw ConfigError("--sampler grid needs choice() parameters only; --param " + p.name + "=" + p.expr +
                              " is not one",
                          "use --sampler random or tpe, or list the values with choice(...)");
      }
    }
  }
  int64_t capacity() const override {
    // Saturates: five choice(range(10000)) parameters would overflow int64_t.
    int64_t n = 1;
    for (const Param& p : space_) {
      const auto k = static_cast<int64_t>(p.choices.size());
      if (n > std::numeric_limits<int64_t>::max() / k) return std::numeric_limits<int64_t>::max();
      n *= k;
    }
    return n;
  }
  nlohmann::json propose(int64_t index, const std::vector<Observation>&) override {
    nlohmann::json out = nlohmann::json::object();
    int64_t rest = index % capacity();
    for (auto it = space_.rbegin(); it != space_.rend(); ++it) {  // the last varies fastest
      const auto n = static_cast<int64_t>(it->choices.size());
      out[it->name] = it->choices[static_cast<size_t>(rest % n)];
      rest /= n;
    }
    return out;
  }

 private:
  Space space_;
};

// ---- TPE ---------------------------------------------------------------------------------
// Written here because no C++ library Debian ships has one; it follows Optuna's univariate
// TPESampler (Bergstra et al. 2011): split the finished trials into the best gamma(n) and the
// rest, fit a Parzen estimator (a truncated-Gaussian mixture with a prior component) to each,
// draw candidates from the good one l(x) and keep the one with the largest l(x) / g(x).

constexpr double kEps = 1e-12;

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// Optuna's default weights: the newest 25 observations weigh 1, older ones ramp down.
std::vector<double> ramp_weights(size_t n) {
  std::vector<double> w(n, 1.0);
  if (n < 25) return w;
  const size_t ramp = n - 25;
  for (size_t i = 0; i < ramp; ++i) {
    w[i] = ramp == 1 ? 1.0 / static_cast<double>(n)
                     : 1.0 / static_cast<double>(n) +
                           (1.0 - 1.0 / static_cast<double>(n)) * static_cast<double>(i) / static_cast<double>(ramp - 1);
  }
  return w;
}

// A mixture of Gaussians truncated to [low, high], in the parameter's internal space.
struct Parzen {
  std::vector<double> weights, mus, sigmas;
  double low = 0, high = 1;

  Parzen(const std::vector<double>& obs, const std::vector<double>& obs_weights, double lo, double hi,
         double prior_mu, double prior_sigma, double prior_weight)
      : low(lo), high(hi) {
    // Sorted observations with the prior inserted at its place; each sigma is the larger gap
    // to a neighbour, clipped to [(hi - lo) / min(100, n + 1), hi - lo] (the "magic clip").
    std::vector<size_t> order(obs.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return obs[a] < obs[b]; });
    struct C { double mu, w; bool prior; };
    std::vector<C> cs;
    for (size_t i : order) cs.push_back({obs[i], obs_weights[i], false});
    const auto at = std::lower_bound(cs.begin(), cs.end(), prior_mu, [](const C& c, double v) { return c.mu < v; });
    cs.insert(at, C{prior_mu, prior_weight, true});
    const double range = hi - lo;
    const double min_sigma = range / std::min(100.0, 1.0 + static_cast<double>(cs.size()));
    for (size_t i = 0; i < cs.size(); ++i) {
      double s;
      if (cs[i].prior) {
        s = prior_sigma;
      } else {
        const double left = i > 0 ? cs[i].mu - cs[i - 1].mu : -1;
        const double right = i + 1 < cs.size() ? cs[i + 1].mu - cs[i].mu : -1;
        s = std::max(left, right);
        if (s <= 0) s = range;
        s = std::clamp(s, min_sigma, range);
      }
      mus.push_back(cs[i].mu);
      sigmas.push_back(s);
      weights.push_back(cs[i].w);
    }
    const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
    for (double& w : weights) w /= total;
  }

  double sample(std::mt19937_64& rng) const {
    std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
    const size_t k = pick(rng);
    // Truncated normal by inverting its CDF between the bounds' CDF values.
    const double a = normal_cdf((low - mus[k]) / sigmas[k]), b = normal_cdf((high - mus[k]) / sigmas[k]);
    std::uniform_real_distribution<double> u(a, b);
    double p = std::clamp(u(rng), 1e-15, 1 - 1e-15);
    // erfc inverse by bisection: cheap enough for 24 candidates, and dependency-free.
    double lo = low, hi = high;
    for (int it = 0; it < 80; ++it) {
      const double mid = 0.5 * (lo + hi);
      if (normal_cdf((mid - mus[k]) / sigmas[k]) < p) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
  }

  double log_pdf(double x) const {
    double sum = 0;
    for (size_t k = 0; k < mus.size(); ++k) {
      const double z = (x - mus[k]) / sigmas[k];
      const double mass = std::max(kEps, normal_cdf((high - mus[k]) / sigmas[k]) - normal_cdf((low - mus[k]) / sigmas[k]));
      sum += weights[k] * std::exp(-0.5 * z * z) / (sigmas[k] * std::sqrt(2 * M_PI) * mass);
    }
    return std::log(std::max(sum, 1e-300));
  }
};

class TpeSampler : public Sampler {
 public:
  TpeSampler(Space space, uint64_t seed, TpeOptions o) : space_(std::move(space)), seed_(seed), o_(o),
                                                          random_(space_, seed) {}

  nlohmann::json propose(int64_t index, const std::vector<Observation>& finished) override {
    if (static_cast<int64_t>(finished.size()) < o_.startup_trials) return random_.propose(index, finished);
    // Below = the best gamma(n) trials by loss; each keeps its place in trial order for weights.
    const size_t n = finished.size();
    const size_t n_below = std::min<size_t>(static_cast<size_t>(std::ceil(0.1 * static_cast<double>(n))), 25);
    std::vector<size_t> by_loss(n);
    std::iota(by_loss.begin(), by_loss.end(), 0);
    std::stable_sort(by_loss.begin(), by_loss.end(),
                     [&](size_t a, size_t b) { return finished[a].loss < finished[b].loss; });
    std::vector<bool> is_below(n, false);
    for (size_t i = 0; i < n_below; ++i) is_below[by_loss[i]] = true;
    std::vector<size_t> below, above;
    for (size_t i = 0; i < n; ++i) (is_below[i] ? below : above).push_back(i);

    nlohmann::json out = nlohmann::json::object();
    for (size_t pi = 0; pi < space_.size(); ++pi) {
      const Param& p = space_[pi];
      auto rng = trial_rng(seed_, index, pi + 1);
      out[p.name] = p.kind == Kind::kChoice ? categorical(p, finished, below, above, rng)
                                            : numerical(p, finished, below, above, rng);
    }
    return out;
  }

 private:
  nlohmann::json categorical(const Param& p, const std::vector<Observation>& fin, const std::vector<size_t>& below,
                             const std::vector<size_t>& above, std::mt19937_64& rng) const {
    const size_t k = p.choices.size();
    auto probs = [&](const std::vector<size_t>& group) {
      std::vector<double> w(k, o_.prior_weight / static_cast<double>(k));
      const auto rw = ramp_weights(group.size());
      for (size_t i = 0; i < group.size(); ++i) {
        const auto& v = fin[group[i]].params.at(p.name);
        const auto it = std::find(p.choices.begin(), p.choices.end(), v);
        if (it != p.choices.end()) w[static_cast<size_t>(it - p.choices.begin())] += rw[i];
      }
      const double t = std::accumulate(w.begin(), w.end(), 0.0);
      for (double& x : w) x /= t;
      return w;
    };
    const auto l = probs(below), g = probs(above);
    std::discrete_distribution<size_t> draw(l.begin(), l.end());
    size_t best = 0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < o_.ei_candidates; ++c) {
      const size_t i = draw(rng);
      const double score = std::log(l[i]) - std::log(g[i]);
      if (score > best_score) { best_score = score; best = i; }
    }
    return p.choices[best];
  }

  // Internal space: log for log kinds; bounds from the range, or mu +- 4 sigma for normals;
  // q kinds widen the bounds by q/2 so the end values keep their share.
  nlohmann::json numerical(const Param& p, const std::vector<Observation>& fin, const std::vector<size_t>& below,
                           const std::vector<size_t>& above, std::mt19937_64& rng) const {
    double lo, hi, prior_mu, prior_sigma;
    if (p.kind == Kind::kRandint) {
      lo = -0.5; hi = p.a - 0.5;
    } else if (p.is_normal()) {
      lo = p.a - 4 * p.b; hi = p.a + 4 * p.b;
    } else {
      lo = p.a; hi = p.b;
    }
    if (p.is_normal()) { prior_mu = p.a; prior_sigma = p.b; } else { prior_mu = 0.5 * (lo + hi); prior_sigma = hi - lo; }
    auto internal = [&](const nlohmann::json& v) {
      const double x = v.get<double>();
      return p.is_log() ? std::log(std::max(x, 1e-300)) : x;
    };
    auto fit = [&](const std::vector<size_t>& group) {
      std::vector<double> xs;
      for (size_t i : group) xs.push_back(std::clamp(internal(fin[i].params.at(p.name)), lo, hi));
      return Parzen(xs, ramp_weights(xs.size()), lo, hi, prior_mu, prior_sigma, o_.prior_weight);
    };
    const Parzen l = fit(below), g = fit(above);
    double best = prior_mu, best_score = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < o_.ei_candidates; ++c) {
      const double x = l.sample(rng);
      const double score = l.log_pdf(x) - g.log_pdf(x);
      if (score > best_score) { best_score = score; best = x; }
    }
    if (p.kind == Kind::kRandint) {
      return static_cast<int64_t>(std::clamp(std::nearbyint(best), 0.0, p.a - 1));
    }
    return p.from_internal(best);
  }

  Space space_;
  uint64_t seed_;
  TpeOptions o_;
  RandomSampler random_;
};

}  // namespace

std::unique_ptr<Sampler> make_tpe_sampler(const Space& space, uint64_t seed, TpeOptions options) {
  return std::make_unique<TpeSampler>(space, seed, options);
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const Space& space, uint64_t seed) {
  if (name == "random") return std::make_unique<RandomSampler>(space, seed);
  if (name == "grid") return std::make_unique<GridSampler>(space);
  if (name == "tpe") return make_tpe_sampler(space, seed, TpeOptions{});
  throw ConfigError("--sampler " + name + ": unknown sampler", "use random, grid or tpe");
}

}  // namespace ctrain::tune
