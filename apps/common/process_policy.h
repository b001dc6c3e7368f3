#pragma once
// Process-wide memory policy, chosen by the programs (the trainers call it first thing), never
// by a library as a side effect.
#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace ctrain::apps {

// glibc's malloc serves blocks of 128 KB and more (up to a threshold it raises as it sees them
// freed, at most 32 MB) with mmap, and gives freed memory at the top of the heap back to the
// kernel. A training step allocates and frees the same large tensors every step (a ResNet-18
// batch of 16 has activations of 51 MB), so each step paid fresh page faults for them: in this
// project's VM, where a fault is costly, ResNet-18 trained at 9 images/s instead of 24
// (benchmarks/RESULTS.md). Large blocks now come from the heap and freed memory stays there
// for the next step, as PyTorch's CUDA caching allocator keeps GPU memory. The cost: the
// resident size stays at its peak instead of breathing, and the heap settles a little above
// it after the first steps (ResNet-18, batch 16: peak RSS 1.2 GB instead of 1.0 GB). A user's
// own malloc settings win.
inline void keep_freed_memory() {
#ifdef __GLIBC__
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if ((tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr) {
    return;
  }
  constexpr int kOneGiB = 1 << 30;  // blocks above this still get their own mapping
  ::mallopt(M_MMAP_THRESHOLD, kOneGiB);
  ::mallopt(M_TRIM_THRESHOLD, kOneGiB);
#endif
}

}  // namespace ctrain::apps
