// The barrier of the small-batch loops: each thread publishes how many phases
// it has finished in its own cache line and spins on the others' lines. A step
// of a small batch lasts a few microseconds; an OpenMP barrier costs a sizeable
// part of that, and sleeping in the kernel far more.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

struct alignas(64) PhaseCounter {
  std::atomic<int64_t> done{0};
};

RK_INLINE void spin_pause() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#endif
}

class SpinBarrier {
 public:
  // counters: one per thread, zero, alive while any thread may still wait.
  SpinBarrier(PhaseCounter* counters, int64_t threads) : counters_(counters), threads_(threads) {}

  // Thread `tid` has finished phase `phase` (1, 2, ...; the same sequence on
  // every thread): publish it (release: its writes before are visible to whoever
  // sees the count) and wait until every thread has.
  void arrive_and_wait(int64_t tid, int64_t phase) const {
    counters_[tid].done.store(phase, std::memory_order_release);
    for (int64_t other = 0; other < threads_; ++other) {
      int64_t spins = 0;
      while (counters_[other].done.load(std::memory_order_acquire) < phase) {
        spin_pause();
        // More threads than free cores (or a preempted peer): let it run.
        if (++spins % 4096 == 0) std::this_thread::yield();
      }
    }
  }

 private:
  PhaseCounter* counters_;
  int64_t threads_;
};

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
