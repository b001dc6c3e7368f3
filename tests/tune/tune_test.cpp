// tune/: parameter expressions, samplers and early-termination policies on scripted inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "tune/policy.h"
#include "tune/sampler.h"
#include "tune/space.h"

using namespace ctrain::tune;

namespace {

std::vector<double> draws(const std::string& spec, int n = 20000, uint64_t seed = 7) {
  const Param p = parse_param(spec);
  std::mt19937_64 rng(seed);
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(p.sample(rng).get<double>());
  return v;
}
double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }
double stddev(const std::vector<double>& v) {
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / (v.size() - 1));
}
bool multiples_of(const std::vector<double>& v, double q) {
  return std::all_of(v.begin(), v.end(), [q](double x) { return std::fabs(x / q - std::round(x / q)) < 1e-9; });
}

}  // namespace

TEST(Expressions, UniformAndLoguniformMoments) {
  auto u = draws("x=uniform(2, 5)");
  EXPECT_NEAR(mean(u), 3.5, 0.03);
  EXPECT_NEAR(stddev(u), 3.0 / std::sqrt(12.0), 0.02);
  EXPECT_GE(*std::min_element(u.begin(), u.end()), 2.0);
  EXPECT_LT(*std::max_element(u.begin(), u.end()), 5.0);
  // loguniform(lo, hi) = exp(uniform(lo, hi)): HyperDrive's definition, not uniform in [lo, hi].
  auto l = draws("lr=loguniform(-6,-1)");
  EXPECT_NEAR(mean(l), (std::exp(-1) - std::exp(-6)) / 5, 0.002);
  EXPECT_GE(*std::min_element(l.begin(), l.end()), std::exp(-6) - 1e-12);
  EXPECT_LE(*std::max_element(l.begin(), l.end()), std::exp(-1) + 1e-12);
  std::vector<double> logs;
  for (double x : l) logs.push_back(std::log(x));
  EXPECT_NEAR(mean(logs), -3.5, 0.03);
}

TEST(Expressions, NormalAndLognormalMoments) {
  auto n = draws("w=normal(1, 2)");
  EXPECT_NEAR(mean(n), 1.0, 0.05);
  EXPECT_NEAR(stddev(n), 2.0, 0.05);
  auto ln = draws("w=lognormal(0, 0.5)");
  EXPECT_NEAR(mean(ln), std::exp(0.125), 0.02);
  EXPECT_GT(*std::min_element(ln.begin(), ln.end()), 0.0);
}

TEST(Expressions, QuantisedKindsRoundToMultiplesOfQ) {
  auto qu = draws("b=quniform(0, 10, 2)");
  EXPECT_TRUE(multiples_of(qu, 2));
  EXPECT_NEAR(mean(qu), 5.0, 0.06);
  EXPECT_EQ(std::set<double>(qu.begin(), qu.end()), (std::set<double>{0, 2, 4, 6, 8, 10}));
  auto ql = draws("b=qloguniform(0, 4, 5)");
  EXPECT_TRUE(multiples_of(ql, 5));
  auto qn = draws("b=qnormal(10, 3, 1)");
  EXPECT_TRUE(multiples_of(qn, 1));
  EXPECT_NEAR(mean(qn), 10.0, 0.08);
  EXPECT_NEAR(stddev(qn), std::sqrt(9.0 + 1.0 / 12), 0.08);
  auto qln = draws("b=qlognormal(1, 0.3, 0.5)");
  EXPECT_TRUE(multiples_of(qln, 0.5));
}

TEST(Expressions, RandintAndChoiceAreUniformOverTheirValues) {
  const Param r = parse_param("k=randint(4)");
  const Param c = parse_param("batch-size=choice(32, 64, 128)");
  std::mt19937_64 rng(3);
  std::map<int64_t, int> rc, cc;
  for (int i = 0; i < 12000; ++i) {
    const auto a = r.sample(rng), b = c.sample(rng);
    ASSERT_TRUE(a.is_number_integer());
    ASSERT_TRUE(b.is_number_integer());
    ++rc[a.get<int64_t>()];
    ++cc[b.get<int64_t>()];
  }
  ASSERT_EQ(rc.size(), 4u);
  for (const auto& [v, n] : rc) EXPECT_NEAR(n / 12000.0, 0.25, 0.02) << v;
  ASSERT_EQ(cc.size(), 3u);
  for (const auto& [v, n] : cc) EXPECT_NEAR(n / 12000.0, 1.0 / 3, 0.02) << v;
  EXPECT_EQ(parse_param("act=choice('relu', \"tanh\", gelu)").choices,
            (std::vector<nlohmann::json>{"relu", "tanh", "gelu"}));
  EXPECT_EQ(parse_param("n=choice(range(1, 5))").choices, (std::vector<nlohmann::json>{1, 2, 3, 4}));
  EXPECT_EQ(parse_param("--lr=choice(0.1, 1e-3)").name, "lr");
}

TEST(Expressions, BadExpressionsNameTheParameter) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"lr=gaussian(0,1)", "unknown expression 'gaussian'"},
      {"bs=choice()", "at least one value"},
      {"lr=uniform(0.1, 0.1)", "lo must be below hi"},
      {"lr=loguniform(-1, -6)", "lo must be below hi"},
      {"lr=normal(0, 0)", "sigma must be positive"},
      {"lr=quniform(0, 1, 0)", "q must be positive"},
      {"lr=uniform(0)", "takes 2 arguments, got 1"},
      {"lr=uniform(0, x)", "'x' is not a number"},
      {"k=randint(0)", "upper >= 1"},
      {"lr=uniform(0,1) junk", "unexpected text"},
      {"lr=uniform(0,1", "expected ')'"},
      {"lr", "expected NAME=EXPRESSION"},
  };
  for (const auto& [spec, why] : bad) {
    try {
      parse_param(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const ctrain::ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(why), std::string::npos) << spec << ": " << msg;
      EXPECT_NE(msg.find("--param " + spec.substr(0, spec.find('='))), std::string::npos) << msg;
    }
  }
}

TEST(Expressions, ValuesPrintAsTrainersReadThem) {
  EXPECT_EQ(format_value(64.0), "64");
  EXPECT_EQ(format_value(int64_t{128}), "128");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(0.020048921309790742), "0.020048921309790742");
  EXPECT_EQ(format_value("relu"), "relu");
}

TEST(Samplers, GridRunsTheProductInOrderLastFastest) {
  const Space s = {parse_param("a=choice(1, 2)"), parse_param("b=choice(x, y, z)")};
  auto g = make_sampler("grid", s, 1);
  EXPECT_EQ(g->capacity(), 6);
  std::vector<std::string> seen;
  for (int i = 0; i < 6; ++i) {
    const auto p = g->propose(i, {});
    seen.push_back(format_value(p["a"]) + format_value(p["b"]));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"1x", "1y", "1z", "2x", "2y", "2z"}));
  EXPECT_THROW(make_sampler("grid", {parse_param("lr=uniform(0,1)")}, 1), ctrain::ConfigError);
  EXPECT_THROW(make_sampler("bayesian", s, 1), ctrain::ConfigError);
}

TEST(Samplers, RandomProposalsDependOnlyOnSeedAndIndex) {
  const Space s = {parse_param("lr=loguniform(-6,-1)"), parse_param("bs=choice(32,64,128)")};
  auto a = make_sampler("random", s, 5), b = make_sampler("random", s, 5), c = make_sampler("random", s, 6);
  for (int i = 0; i < 4; ++i) a->propose(i, {});
  EXPECT_EQ(a->propose(7, {}), b->propose(7, {}));  // whatever was proposed before
  EXPECT_NE(a->propose(7, {}), c->propose(7, {}));
  EXPECT_NE(a->propose(7, {}), a->propose(8, {}));
}

// TPE must beat random search on a known function with the same budget: sequential trials,
// 12 seeds, the median of the best loss each found.
TEST(Samplers, TpeImprovesOnRandomOnAKnownFunction) {
  const Space s = {parse_param("x=uniform(0, 1)"), parse_param("lr=loguniform(-11.5, -2.3)"),
                   parse_param("act=choice(a, b, c, d)")};
  auto f = [](const nlohmann::json& p) {
    const double x = p["x"].get<double>(), l = std::log10(p["lr"].get<double>());
    return (x - 0.7) * (x - 0.7) + 0.1 * (l + 3) * (l + 3) + (p["act"] == "c" ? 0.0 : 0.3);
  };
  auto best_after = [&](const std::string& name, uint64_t seed) {
    auto sampler = make_sampler(name, s, seed);
    std::vector<Observation> hist;
    double best = 1e9;
    for (int i = 0; i < 40; ++i) {
      const auto p = sampler->propose(i, hist);
      const double y = f(p);
      best = std::min(best, y);
      hist.push_back({p, y});
    }
    return best;
  };
  std::vector<double> tpe, rnd;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    tpe.push_back(best_after("tpe", seed));
    rnd.push_back(best_after("random", seed));
  }
  std::sort(tpe.begin(), tpe.end());
  std::sort(rnd.begin(), rnd.end());
  const double med_tpe = 0.5 * (tpe[5] + tpe[6]), med_rnd = 0.5 * (rnd[5] + rnd[6]);
  EXPECT_LT(med_tpe, med_rnd * 0.7) << "tpe " << med_tpe << " random " << med_rnd;
}

TEST(Samplers, TpeProposalsAreReproducibleAndInRange) {
  const Space s = {parse_param("k=randint(5)"), parse_param("q=quniform(1, 9, 2)"), parse_param("n=normal(0, 1)")};
  TpeOptions o;
  o.startup_trials = 3;
  auto a = make_tpe_sampler(s, 9, o), b = make_tpe_sampler(s, 9, o);
  std::vector<Observation> hist;
  for (int i = 0; i < 15; ++i) {
    const auto p = a->propose(i, hist);
    EXPECT_EQ(p, b->propose(i, hist));
    ASSERT_TRUE(p["k"].is_number_integer());
    EXPECT_GE(p["k"].get<int64_t>(), 0);
    EXPECT_LT(p["k"].get<int64_t>(), 5);
    EXPECT_NEAR(std::fmod(p["q"].get<double>(), 2.0), 0.0, 1e-9);
    hist.push_back({p, std::fabs(p["n"].get<double>() - 0.5)});
  }
}

namespace {
PolicyConfig bandit(double factor, double amount, int64_t interval = 1, int64_t delay = 0) {
  PolicyConfig c;
  c.name = "bandit";
  c.slack_factor = factor;
  c.slack_amount = amount;
  c.evaluation_interval = interval;
  c.delay_evaluation = delay;
  return c;
}
}  // namespace

// HyperDrive's documented example: slack_factor 0.2, the best run at 0.8; a run whose best
// Y satisfies Y * 1.2 < 0.8 is cancelled.
TEST(Policies, BanditFollowsHyperDrivesSlackFactorExample) {
  const StopPolicy p(bandit(0.2, 0), true);
  Streams s = {{0, {0.5, 0.8}}, {1, {0.4, 0.6}}, {2, {0.6, 0.7}}};
  const Decision d1 = p.decide(1, s);
  EXPECT_TRUE(d1.stop);  // 0.6 * 1.2 = 0.72 < 0.8
  EXPECT_NE(d1.reason.find("0.6 < 0.8 / 1.2"), std::string::npos) << d1.reason;
  EXPECT_FALSE(p.decide(2, s).stop);  // 0.7 * 1.2 = 0.84 >= 0.8
  EXPECT_FALSE(p.decide(0, s).stop);  // the best never stops
}

TEST(Policies, BanditSlackAmountAndMinimize) {
  const StopPolicy amount(bandit(0, 0.2), true);
  Streams s = {{0, {0.8}}, {1, {0.59}}, {2, {0.61}}};
  EXPECT_TRUE(amount.decide(1, s).stop);
  EXPECT_FALSE(amount.decide(2, s).stop);
  const StopPolicy min(bandit(0.1, 0), false);  // losses: stop when Y > best * 1.1
  Streams l = {{0, {1.0}}, {1, {1.2}}, {2, {1.05}}};
  EXPECT_TRUE(min.decide(1, l).stop);
  EXPECT_FALSE(min.decide(2, l).stop);
}

TEST(Policies, BanditComparesWithinTheSameNumberOfIntervals) {
  // Trial 0 reached 0.9 only at interval 3; at interval 1 the best is its 0.5.
  const StopPolicy p(bandit(0.1, 0), true);
  Streams s = {{0, {0.5, 0.7, 0.9}}, {1, {0.48}}};
  EXPECT_FALSE(p.decide(1, s).stop);
  s[1] = {0.48, 0.5, 0.6};
  EXPECT_TRUE(p.decide(1, s).stop);
}

TEST(Policies, EvaluationScheduleFollowsIntervalAndDelay) {
  auto due = [](int64_t interval, int64_t delay) {
    const StopPolicy p(bandit(0.1, 0, interval, delay), true);
    std::vector<int64_t> out;
    for (int64_t n = 1; n <= 16; ++n) {
      if (p.due(n)) out.push_back(n);
    }
    return out;
  };
  EXPECT_EQ(due(1, 5), (std::vector<int64_t>{5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}));
  EXPECT_EQ(due(2, 0), (std::vector<int64_t>{2, 4, 6, 8, 10, 12, 14, 16}));
  EXPECT_EQ(due(3, 10), (std::vector<int64_t>{12, 15}));
  // Not due: no decision, however bad.
  const StopPolicy p(bandit(0.1, 0, 2, 0), true);
  Streams s = {{0, {0.9}}, {1, {0.1}}};
  EXPECT_FALSE(p.decide(1, s).stop);
  s = {{0, {0.9, 0.9}}, {1, {0.1, 0.1}}};
  EXPECT_TRUE(p.decide(1, s).stop);
}

TEST(Policies, MedianStopsBelowTheMedianOfRunningAverages) {
  PolicyConfig c;
  c.name = "median";
  const StopPolicy p(c, true);
  // Running averages over 2 intervals: 0.7, 0.6, 0.5 -> median 0.6.
  Streams s = {{0, {0.6, 0.8}}, {1, {0.5, 0.7}}, {2, {0.4, 0.6}}, {3, {0.5, 0.59}}};
  const Decision d = p.decide(3, s);
  EXPECT_TRUE(d.stop);  // best 0.59 < 0.6
  EXPECT_NE(d.reason.find("0.59 < 0.6 (median of 3"), std::string::npos) << d.reason;
  s[3] = {0.5, 0.61};
  EXPECT_FALSE(p.decide(3, s).stop);
  s[3] = {0.5};  // its own interval 1: others' averages over 1 interval are 0.6, 0.5, 0.4
  EXPECT_FALSE(p.decide(3, s).stop);
  s[3] = {0.49};
  EXPECT_TRUE(p.decide(3, s).stop);
  Streams alone = {{0, {0.1}}};
  EXPECT_FALSE(p.decide(0, alone).stop);  // nobody to compare with
}

// HyperDrive's example: truncation_percentage 20 at interval 5 stops the lowest 20% of runs.
TEST(Policies, TruncationStopsTheLowestPercentage) {
  PolicyConfig c;
  c.name = "truncation";
  c.truncation_percentage = 20;
  c.delay_evaluation = 5;
  const StopPolicy p(c, true);
  Streams s;
  for (int t = 0; t < 10; ++t) s[t] = std::vector<double>(5, 0.5 + 0.01 * t);
  std::vector<int64_t> stopped;
  for (int t = 0; t < 10; ++t) {
    if (p.decide(t, s).stop) stopped.push_back(t);
  }
  EXPECT_EQ(stopped, (std::vector<int64_t>{0, 1}));
  Streams early;
  for (int t = 0; t < 10; ++t) early[t] = std::vector<double>(4, 0.5 + 0.01 * t);
  EXPECT_FALSE(p.decide(0, early).stop);  // interval 4 < delay 5
}

TEST(Policies, BadSettingsNameTheFlag) {
  auto msg = [](PolicyConfig c) {
    try {
      c.validate();
    } catch (const ctrain::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg(bandit(0, 0)).find("exactly one of --slack-factor and --slack-amount"), std::string::npos);
  EXPECT_NE(msg(bandit(0.1, 0.1)).find("exactly one"), std::string::npos);
  EXPECT_NE(msg(bandit(0.1, 0, 0)).find("--evaluation-interval"), std::string::npos);
  PolicyConfig t;
  t.name = "truncation";
  EXPECT_NE(msg(t).find("--truncation-percentage"), std::string::npos);
  PolicyConfig a;
  a.name = "asha";
  a.max_epochs = 0;
  EXPECT_NE(msg(a).find("--max-epochs"), std::string::npos);
  PolicyConfig u;
  u.name = "hyperband";
  EXPECT_NE(msg(u).find("--policy hyperband"), std::string::npos);
  EXPECT_EQ(msg(bandit(0.1, 0)), "");
}

TEST(Policies, AshaPromotesTheTopThirdOfEachRung) {
  PolicyConfig c;
  c.name = "asha";
  c.grace_period = 1;
  c.reduction_factor = 3;
  c.max_epochs = 9;
  Asha a(c, true);
  ASSERT_EQ(a.rungs(), 3);
  EXPECT_EQ(a.budget(0), 1);
  EXPECT_EQ(a.budget(1), 3);
  EXPECT_EQ(a.budget(2), 9);
  a.report(0, 0, 0.5);
  a.report(1, 0, 0.7);
  EXPECT_FALSE(a.promote());  // 2 results: floor(2/3) = 0 promotable
  a.report(2, 0, 0.6);
  auto p = a.promote();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 1);
  EXPECT_EQ(p->rung, 1);
  EXPECT_FALSE(a.promote());  // the top third (one trial) is taken
  for (int t = 3; t < 6; ++t) a.report(t, 0, 0.1 * t);  // 0.3, 0.4, 0.5: trial 1 and 2 stay on top
  p = a.promote();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 2);  // 6 results: top 2 = trials 1 and 2
  a.report(1, 1, 0.8);
  a.report(2, 1, 0.75);
  EXPECT_FALSE(a.promote());  // rung 1 has 2 results
  const auto paused = a.paused();
  EXPECT_EQ(std::set<int64_t>(paused.begin(), paused.end()), (std::set<int64_t>{0, 1, 2, 3, 4, 5}) );
  // Replaying the journal gives the same state.
  Asha b(c, true);
  for (int t = 0; t < 6; ++t) b.report(t, 0, t == 1 ? 0.7 : t == 2 ? 0.6 : t == 0 ? 0.5 : 0.1 * t);
  b.mark_promoted(1, 1);
  b.mark_promoted(2, 1);
  EXPECT_FALSE(b.promote());
  EXPECT_NE(a.paused_reason(0).find("rung 0 after 1 epochs"), std::string::npos) << a.paused_reason(0);
}
