#pragma once
// Early termination. A policy sees metric streams (one value per interval: interval n is the
// n-th epoch a trial reported, 1-based) and decides, at the intervals it evaluates, whether a
// trial stops. It never touches processes; the sweep acts on its decisions. ASHA is a
// scheduler rather than a stop rule (it pauses trials at rungs and promotes the best later),
// so it is its own class.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ctrain::tune {

struct PolicyConfig {
  std::string name = "none";        // --policy none|bandit|median|truncation|asha
  double slack_factor = 0;          // bandit: stop when best/(1+slack) beats the trial (maximise)
  double slack_amount = 0;          // bandit: ... or best - amount beats it
  int64_t evaluation_interval = 1;  // evaluate at intervals that are multiples of this ...
  int64_t delay_evaluation = 0;     // ... and >= this (HyperDrive's rule)
  double truncation_percentage = 0; // truncation: stop the lowest N% at each evaluation
  int64_t grace_period = 1;         // asha: epochs of the first rung
  int64_t reduction_factor = 3;     // asha: eta; the top 1/eta of a rung is promoted
  int64_t max_epochs = 0;           // asha: the last rung's epochs

  // Throws ConfigError naming the flag (--slack-factor, --truncation-percentage, ...).
  void validate() const;
};

struct Decision {
  bool stop = false;
  std::string reason;  // "0.71 < 0.83 / 1.1 (best of trial 2 at interval 4, slack factor 0.1)"
};

// metric streams by trial; a stream holds the values reported so far, in interval order.
using Streams = std::map<int64_t, std::vector<double>>;

// The stop rules: none, bandit, median, truncation. maximize: higher is better.
class StopPolicy {
 public:
  StopPolicy(PolicyConfig config, bool maximize) : c_(std::move(config)), maximize_(maximize) {}
  // Whether the policy evaluates at interval n (1-based).
  bool due(int64_t n) const;
  // The decision for `trial` at interval n = streams.at(trial).size(); continue when not due.
  Decision decide(int64_t trial, const Streams& streams) const;

 private:
  bool better(double a, double b) const { return maximize_ ? a > b : a < b; }
  double best_of(const std::vector<double>& v, size_t n) const;
  Decision bandit(int64_t trial, const Streams& s, size_t n) const;
  Decision median(int64_t trial, const Streams& s, size_t n) const;
  Decision truncation(int64_t trial, const Streams& s, size_t n) const;

  PolicyConfig c_;
  bool maximize_;
};

// Asynchronous successive halving (Li et al. 2018; Ray Tune's ASHA, promotion form): rung k
// trains to grace_period * eta^k epochs (the last rung to max_epochs). A trial that finishes a
// rung pauses there; whenever a worker is free, the best paused trial in the top 1/eta of its
// rung (highest rung first) is promoted, i.e. resumed from its checkpoint to the next rung's
// epochs. Otherwise a new trial starts at rung 0.
class Asha {
 public:
  Asha(PolicyConfig config, bool maximize);
  int64_t rungs() const { return static_cast<int64_t>(budgets_.size()); }
  int64_t budget(int64_t rung) const { return budgets_.at(static_cast<size_t>(rung)); }
  // A trial finished `rung` with `value` (its metric at that rung's last epoch).
  void report(int64_t trial, int64_t rung, double value);
  struct Promotion {
    int64_t trial = 0, rung = 0;  // the rung it is promoted to
    std::string reason;
  };
  // The next promotion, or none; marks it taken.
  std::optional<Promotion> promote();
  // Replays a promotion taken earlier (a resumed sweep reading its journal).
  void mark_promoted(int64_t trial, int64_t to_rung);
  // Trials that finished a rung below the last and were not promoted (yet).
  std::vector<int64_t> paused() const;
  // Why a paused trial ends there: "asha: paused at rung k after N epochs with V, ...".
  std::string paused_reason(int64_t trial) const;

 private:
  struct Entry { int64_t trial; double value; bool promoted; };
  PolicyConfig c_;
  bool maximize_;
  std::vector<int64_t> budgets_;
  std::vector<std::vector<Entry>> rungs_;
};

}  // namespace ctrain::tune
