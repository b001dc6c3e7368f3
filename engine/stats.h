#pragma once
// The figures of an evaluation and of a training epoch, as train() reports them to the
// programs (TrainHooks::on_epoch), metrics.jsonl and TensorBoard.
#include <cstdint>

namespace ctrain::engine {

struct EvalStats {
  double loss = 0.0;  // mean cross-entropy
  double acc = 0.0;   // fraction correct
  int64_t samples = 0;
};

// Where an epoch's wall time went, from the host's side (metrics.jsonl "phases"). On a GPU
// the loop only queues work: step_s is the time spent launching it, sync_s the wait for the
// device to finish at the epoch's end, so a GPU-bound epoch shows in sync_s, a launch-bound
// one in step_s, a starved one in data_s, and a fixed per-epoch cost (a re-tune, a host sync
// inside a step) as one slow step. The progress line's every --log-interval loss read waits
// for the device too: progress_s. What none of them holds is the loop's own bookkeeping.
struct EpochPhases {
  double data_s = 0.0;          // waiting in the batch source's next()
  double step_s = 0.0;          // in the training step (host time)
  double sync_s = 0.0;          // the epoch's final host sync and the metrics allreduce
  double progress_s = 0.0;      // the progress line's loss reads (a host sync each on a GPU)
  int64_t slowest_step = 0;     // 1-based
  double slowest_step_s = 0.0;  // its host time
  double eval_s = 0.0;          // evaluation after the epoch
  double checkpoint_s = 0.0;    // the epoch's checkpoint (0 when none was due)
};

struct EpochStats {
  int64_t epoch = 0;   // 0-based, as the reference scripts print it
  int64_t epochs = 0;  // total
  double train_loss = 0.0, train_acc = 0.0;
  EvalStats val;
  double seconds = 0.0;          // training part of the epoch (eval excluded)
  double samples_per_sec = 0.0;  // training samples / seconds
  double lr = 0.0, momentum = 0.0;
  double best_val_acc = 0.0;
  bool is_best = false;
  EpochPhases phases;
};

}  // namespace ctrain::engine
