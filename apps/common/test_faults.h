#pragma once
// Test-only fault injection, installed by the trainers from the environment the fault tests
// set, so that the library holds no test code in its loop and reads no such variable:
//  - CTRAIN_FAULT_AT="ACTION:EPOCH:STEP[:RANK]": the given rank (every rank when absent) SIGKILLs
//    or SIGSTOPs itself ("kill", "stop"), or makes its input NaN ("nan"), just before that step
//    (1-based) of that epoch; only in a process that is not a launcher restart, so a restarted
//    job runs through.
//  - CTRAIN_FAULT_ABORT_WRITE_AT=F: the process SIGKILLs itself once a fraction F of an atomic
//    write's bytes are in its temp file (core/fs.h).
// The fault tests use them to interrupt training at a known point with a real signal.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "core/fs.h"
#include "engine/trainer.h"

namespace ctrain::apps {

inline void install_test_faults(engine::TrainHooks& hooks, const engine::Runtime& rt) {
  if (const char* f = std::getenv("CTRAIN_FAULT_ABORT_WRITE_AT"); f != nullptr) {
    set_write_interruption(std::atof(f), [] { ::raise(SIGKILL); });
  }
  const char* v = std::getenv("CTRAIN_FAULT_AT");
  if (v == nullptr || rt.launch.restart_count > 0) return;
  char action[16] = {0};
  long long epoch = -1, step = -1, rank = -1;
  if (std::sscanf(v, "%15[a-z]:%lld:%lld:%lld", action, &epoch, &step, &rank) < 3) return;
  if (rank >= 0 && rank != rt.launch.rank) return;
  const std::string what = action;
  hooks.before_step = [what, epoch, step](int64_t e, int64_t s, torch::Tensor& input) {
    if (e != epoch || s != step) return;
    if (what == "kill") ::raise(SIGKILL);
    if (what == "stop") ::raise(SIGSTOP);
    if (what == "nan") input = input * std::numeric_limits<float>::quiet_NaN();
  };
}

}  // namespace ctrain::apps
