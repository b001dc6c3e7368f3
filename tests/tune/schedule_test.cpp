// The scheduler's decisions (tune/schedule.h), without processes: what a trial's end means, and
// what fills a free slot.
#include "tune/schedule.h"

#include <gtest/gtest.h>

namespace ctrain::tune {
namespace {

using Kind = ExitOutcome::Kind;

ExitFacts facts(int code) {
  ExitFacts f;
  f.code = code;
  f.has_metric = true;
  f.metric = "validation_acc";
  f.trial = "003";
  f.metrics_file = "sweep/trials/003/metrics.jsonl";
  f.last_log_line = "ctrain-mnist: error: --learning-rate must be a positive number, got -1";
  return f;
}

TEST(ClassifyExitTest, AZeroExitWithItsMetricIsCompleted) {
  const ExitOutcome o = classify_exit(facts(0));
  EXPECT_EQ(o.kind, Kind::kCompleted);
  EXPECT_TRUE(o.fatal.empty());
}

TEST(ClassifyExitTest, APolicyStopWinsWhateverTheCode) {
  for (int code : {0, 1, 143}) {
    ExitFacts f = facts(code);
    f.stopped_by_policy = code != 0;
    f.policy_stops_now = code == 0;
    f.stop_reason = "bandit at interval 2: 0.81 < 0.9 / 1.1";
    const ExitOutcome o = classify_exit(f);
    EXPECT_EQ(o.kind, Kind::kEarlyTerminated) << code;
    EXPECT_EQ(o.reason, f.stop_reason);
  }
}

TEST(ClassifyExitTest, AshaPausesAtItsRungOrFailsWithoutAMetric) {
  ExitFacts f = facts(0);
  f.more_rungs = true;
  EXPECT_EQ(classify_exit(f).kind, Kind::kPausedAtRung);
  f.has_metric = false;
  const ExitOutcome o = classify_exit(f);
  EXPECT_EQ(o.kind, Kind::kFailed);
  EXPECT_EQ(o.reason, "exit code 0 but no validation_acc in its metrics.jsonl");
  f.no_metric_reason = "all 3 lines of sweep/trials/003/metrics.jsonl were malformed";
  EXPECT_EQ(classify_exit(f).reason, f.no_metric_reason);
}

// Bad lines are the trial's failure; no line at all means --metric names nothing the program
// writes, which every trial would show: fatal, nothing recorded.
TEST(ClassifyExitTest, AZeroExitWithoutAMetricFailsOrStopsTheSweep) {
  ExitFacts f = facts(0);
  f.has_metric = false;
  f.no_metric_reason = "validation_acc was NaN or infinite in every line that had it (2, in x): the run diverged?";
  ExitOutcome o = classify_exit(f);
  EXPECT_EQ(o.kind, Kind::kFailed);
  EXPECT_TRUE(o.fatal.empty());
  f.no_metric_reason.clear();
  o = classify_exit(f);
  EXPECT_EQ(o.kind, Kind::kNotRecorded);
  EXPECT_EQ(o.fatal, "--metric validation_acc: trial 003 finished without writing sweep/trials/003/metrics.jsonl");
}

TEST(ClassifyExitTest, ANonZeroExitFailsNamingItsCodeAndLastLine) {
  const ExitOutcome o = classify_exit(facts(137));
  EXPECT_EQ(o.kind, Kind::kFailed);
  EXPECT_EQ(o.reason, "exit code 137: ctrain-mnist: error: --learning-rate must be a positive number, got -1");
  EXPECT_TRUE(o.fatal.empty());
}

// Usage errors: the first trial to end refusing a fixed argument stops the sweep; one refusing
// a value it sampled, or a later trial, is that trial's failure only.
TEST(ClassifyExitTest, TheFirstUsageErrorStopsTheSweepUnlessItNamesASampledFlag) {
  ExitFacts f = facts(2);
  f.first_to_end = true;
  ExitOutcome o = classify_exit(f);
  EXPECT_EQ(o.kind, Kind::kFailed);
  EXPECT_EQ(o.fatal, "trial 003 exited 2 (usage): " + f.last_log_line);
  f.names_a_sampled_flag = true;
  EXPECT_TRUE(classify_exit(f).fatal.empty());
  f.names_a_sampled_flag = false;
  f.first_to_end = false;
  EXPECT_TRUE(classify_exit(f).fatal.empty());
}

TEST(FillSlotTest, RestartsThenPromotionsThenNewTrials) {
  EXPECT_EQ(fill_slot(1, 2, true, true, 0, 8), SlotFill::kRestart);
  EXPECT_EQ(fill_slot(1, 2, false, true, 0, 8), SlotFill::kPromotion);
  EXPECT_EQ(fill_slot(1, 2, false, false, 7, 8), SlotFill::kNewTrial);
  EXPECT_EQ(fill_slot(1, 2, false, false, 8, 8), SlotFill::kNothing);  // every trial started
  EXPECT_EQ(fill_slot(2, 2, true, true, 0, 8), SlotFill::kNothing);    // no free slot
}

}  // namespace
}  // namespace ctrain::tune
