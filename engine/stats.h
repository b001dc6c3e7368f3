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
};

}  // namespace ctrain::engine
