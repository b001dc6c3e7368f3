#include "tune/policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace ctrain::tune {
namespace {

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.4g", v);
  return b;
}

}  // namespace

void PolicyConfig::validate() const {
  static const char* kNames[] = {"none", "bandit", "median", "truncation", "asha"};
  if (std::find(std::begin(kNames), std::end(kNames), name) == std::end(kNames)) {
    throw ConfigError("--policy " + name + ": unknown policy", "use none, bandit, median, truncation or asha");
  }
  // Every number is checked whichever policy uses it, so a typo never waits for a policy switch.
  auto non_negative = [](const char* flag, double v) {
    if (!(v >= 0) || !std::isfinite(v)) throw ConfigError(std::string(flag) + " must be a finite number >= 0 (got " + num(v) + ")");
  };
  non_negative("--slack-factor", slack_factor);
  non_negative("--slack-amount", slack_amount);
  non_negative("--truncation-percentage", truncation_percentage);
  if (!(evaluation_interval >= 1)) throw ConfigError("--evaluation-interval must be at least 1");
  if (!(delay_evaluation >= 0)) throw ConfigError("--delay-evaluation must not be negative");
  if (!(grace_period >= 1)) throw ConfigError("--grace-period must be at least 1");
  if (!(reduction_factor >= 2)) throw ConfigError("--reduction-factor must be at least 2");
  if (!(max_epochs >= 0)) throw ConfigError("--max-epochs must not be negative");
  if (name == "bandit" && (slack_factor > 0) == (slack_amount > 0)) {
    throw ConfigError("--policy bandit needs exactly one of --slack-factor and --slack-amount");
  }
  if (name == "truncation" && !(truncation_percentage >= 1 && truncation_percentage <= 99)) {
    throw ConfigError("--truncation-percentage must be between 1 and 99 (got " + num(truncation_percentage) + ")");
  }
  if (truncation_percentage > 99) throw ConfigError("--truncation-percentage must be at most 99");
  if (name == "asha" && !(max_epochs >= grace_period)) {
    throw ConfigError("--policy asha needs --max-epochs >= --grace-period (got " + std::to_string(max_epochs) + ")",
                      "--max-epochs is the last rung's epochs; the sweep passes --epochs to each trial");
  }
}

bool StopPolicy::due(int64_t n) const {
  return n >= 1 && n % c_.evaluation_interval == 0 && n >= c_.delay_evaluation;
}

double StopPolicy::best_of(const std::vector<double>& v, size_t n) const {
  double b = v.at(0);
  for (size_t i = 1; i < std::min(n, v.size()); ++i) {
    if (better(v[i], b)) b = v[i];
  }
  return b;
}

Decision StopPolicy::decide(int64_t trial, const Streams& streams) const {
  const auto& mine = streams.at(trial);
  const size_t n = mine.size();
  if (c_.name == "none" || c_.name == "asha" || !due(static_cast<int64_t>(n))) return {};
  if (c_.name == "bandit") return bandit(trial, streams, n);
  if (c_.name == "median") return median(trial, streams, n);
  return truncation(trial, streams, n);
}

// HyperDrive's BanditPolicy: the trial's best so far Y against the best value any trial
// reached within the same number of intervals. Maximising, Y stops when Y < best / (1 + factor)
// (equivalently Y * (1 + factor) < best) or Y < best - amount; minimising, mirrored.
Decision StopPolicy::bandit(int64_t trial, const Streams& s, size_t n) const {
  const double y = best_of(s.at(trial), n);
  double best = y;
  int64_t best_trial = trial;
  for (const auto& [t, v] : s) {
    if (v.empty()) continue;
    const double b = best_of(v, n);
    if (better(b, best)) { best = b; best_trial = t; }
  }
  double bound;
  std::string how;
  if (c_.slack_factor > 0) {
    bound = maximize_ ? best / (1 + c_.slack_factor) : best * (1 + c_.slack_factor);
    how = num(best) + (maximize_ ? " / " : " * ") + num(1 + c_.slack_factor);
  } else {
    bound = maximize_ ? best - c_.slack_amount : best + c_.slack_amount;
    how = num(best) + (maximize_ ? " - " : " + ") + num(c_.slack_amount);
  }
  if (!better(bound, y)) return {};
  return {true, num(y) + (maximize_ ? " < " : " > ") + how + " (bandit: best of trial " +
                    std::to_string(best_trial) + " within " + std::to_string(n) + " intervals)"};
}

// MedianStoppingPolicy (Vizier's rule): the trial's best so far against the median of the
// other trials' running averages over their first n intervals (trials that reached n).
Decision StopPolicy::median(int64_t trial, const Streams& s, size_t n) const {
  std::vector<double> avgs;
  for (const auto& [t, v] : s) {
    if (t == trial || v.size() < n) continue;
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += v[i];
    avgs.push_back(sum / static_cast<double>(n));
  }
  if (avgs.empty()) return {};
  std::sort(avgs.begin(), avgs.end());
  const size_t m = avgs.size();
  const double med = m % 2 == 1 ? avgs[m / 2] : 0.5 * (avgs[m / 2 - 1] + avgs[m / 2]);
  const double y = best_of(s.at(trial), n);
  if (!better(med, y)) return {};
  return {true, num(y) + (maximize_ ? " < " : " > ") + num(med) + " (median of " + std::to_string(m) +
                    " other trials' running averages over " + std::to_string(n) + " intervals)"};
}

// TruncationSelectionPolicy: among trials that reached interval n, the lowest
// truncation_percentage % by their value at n stop (floor of the count; ties keep running).
Decision StopPolicy::truncation(int64_t trial, const Streams& s, size_t n) const {
  const double y = s.at(trial)[n - 1];
  size_t count = 0, better_count = 0;
  for (const auto& [t, v] : s) {
    if (v.size() < n) continue;
    ++count;
    if (better(v[n - 1], y)) ++better_count;
  }
  const auto cut = static_cast<size_t>(std::floor(static_cast<double>(count) * c_.truncation_percentage / 100.0));
  if (cut == 0 || better_count < count - cut) return {};
  return {true, num(y) + " is in the lowest " + num(c_.truncation_percentage) + "% at interval " +
                    std::to_string(n) + " (" + std::to_string(better_count) + " of " + std::to_string(count) +
                    " trials are better; " + std::to_string(cut) + " stop)"};
}

Asha::Asha(PolicyConfig config, bool maximize) : c_(std::move(config)), maximize_(maximize) {
  for (int64_t b = c_.grace_period; b < c_.max_epochs; b *= c_.reduction_factor) budgets_.push_back(b);
  budgets_.push_back(c_.max_epochs);
  rungs_.resize(budgets_.size());
}

void Asha::report(int64_t trial, int64_t rung, double value) {
  auto& r = rungs_.at(static_cast<size_t>(rung));
  for (auto& e : r) {
    if (e.trial == trial) { e.value = value; return; }
  }
  r.push_back({trial, value, false});
}

std::optional<Asha::Promotion> Asha::promote() {
  for (int64_t k = rungs() - 2; k >= 0; --k) {
    auto& r = rungs_[static_cast<size_t>(k)];
    const size_t top = r.size() / static_cast<size_t>(c_.reduction_factor);
    if (top == 0) continue;
    std::vector<size_t> order(r.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return maximize_ ? r[a].value > r[b].value : r[a].value < r[b].value;
    });
    for (size_t i = 0; i < top; ++i) {
      Entry& e = r[order[i]];
      if (e.promoted) continue;
      e.promoted = true;
      return Promotion{e.trial, k + 1,
                       num(e.value) + " is #" + std::to_string(i + 1) + " of " + std::to_string(r.size()) +
                           " at rung " + std::to_string(k) + " (top 1/" + std::to_string(c_.reduction_factor) +
                           "): promoted to " + std::to_string(budget(k + 1)) + " epochs"};
    }
  }
  return std::nullopt;
}

void Asha::mark_promoted(int64_t trial, int64_t to_rung) {
  if (to_rung < 1 || to_rung >= rungs()) return;
  for (auto& e : rungs_[static_cast<size_t>(to_rung - 1)]) {
    if (e.trial == trial) e.promoted = true;
  }
}

// A trial appears in rung k+1 only after its promotion from rung k, so an unpromoted entry is
// the highest rung that trial reached.
std::vector<int64_t> Asha::paused() const {
  std::vector<int64_t> out;
  for (size_t k = 0; k + 1 < rungs_.size(); ++k) {
    for (const auto& e : rungs_[k]) {
      if (!e.promoted) out.push_back(e.trial);
    }
  }
  return out;
}

std::string Asha::paused_reason(int64_t trial) const {
  for (size_t k = 0; k < rungs_.size(); ++k) {
    for (const auto& e : rungs_[k]) {
      if (e.trial == trial && !e.promoted) {
        return "asha: paused at rung " + std::to_string(k) + " after " + std::to_string(budgets_[k]) +
               " epochs with " + num(e.value) + ", never in the top 1/" + std::to_string(c_.reduction_factor) +
               " of its rung";
      }
    }
  }
  return "asha: paused";
}

}  // namespace ctrain::tune
