// One emulated CUDA thread of the SIMT emulation (simt_emulation.h): a
// ucontext fiber with its own guarded stack, and the stack-switch helpers
// that AddressSanitizer needs to follow the switches.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

struct uint3 {
  unsigned int x, y, z;
};

namespace rnnkern {
namespace simt {
namespace detail {

inline constexpr std::size_t kFiberStackBytes = 64 * 1024;

// Where a fiber stopped: it runs again when the scheduler resolves the wait.
enum class FiberState : unsigned char {
  kReady,      // runnable
  kAtBarrier,  // __syncthreads()
  kAtWarp,     // a warp-synchronous op (shuffle, vote, __syncwarp)
  kSpinning,   // polled memory in a spin loop; runs again next round
  kDone
};

enum class WarpOp : unsigned char { kShflIdx, kShflXor, kShflDown, kShflUp, kBallot, kSync, kMma };

// What a lane brings to an emulated mma.sync: its fragments (value points here).
struct MmaFragments {
  const std::uint32_t* a;  // 4 registers of A
  const std::uint32_t* b;  // 2 registers of B
  float* c;                // 4 accumulators, replaced by D
  bool half;               // fp16, else bfloat16
};

// What a lane brings to a warp-synchronous op, and what it gets back.
struct WarpRequest {
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  int param = 0;  // source lane, lane mask or delta
  int width = 32;
  std::uint64_t value = 0;
  std::uint64_t result = 0;
};

// One emulated thread. The stack is mmap'ed with a PROT_NONE page at its low
// end, so an overflow faults instead of overwriting a neighbouring stack.
struct Fiber {
  ucontext_t ctx;
  uint3 tid{0, 0, 0};
  unsigned slot = 0;  // the resident block it belongs to
  FiberState state = FiberState::kReady;
  bool started = false;
  bool polling = false;  // resumed only to poll memory again
  WarpRequest warp;
  void* asan_fake_stack = nullptr;
  char* mapping = nullptr;
  std::size_t guard_bytes = 0;

  Fiber() {
    guard_bytes = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, guard_bytes + kFiberStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mapping = static_cast<char*>(p);
    if (mprotect(mapping, guard_bytes, PROT_NONE) != 0 || getcontext(&ctx) != 0) {
      munmap(mapping, guard_bytes + kFiberStackBytes);
      throw std::runtime_error("rnnkern::simt: cannot set up a fiber stack");
    }
    ctx.uc_stack.ss_sp = stack();
    ctx.uc_stack.ss_size = kFiberStackBytes;
    ctx.uc_link = nullptr;  // fibers never return; they switch back explicitly
  }
  ~Fiber() { munmap(mapping, guard_bytes + kFiberStackBytes); }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  char* stack() const { return mapping + guard_bytes; }
};

// ASan must be told about every stack switch, or unwinding an exception on a
// fiber stack produces false reports. No-ops in a normal build.
inline void asan_start_switch(void** fake_stack_save, const void* bottom, std::size_t bytes) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, bytes);
#else
  (void)fake_stack_save;
  (void)bottom;
  (void)bytes;
#endif
}

inline void asan_finish_switch(void* fake_stack_save, const void** old_bottom,
                               std::size_t* old_bytes) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack_save, old_bottom, old_bytes);
#else
  (void)fake_stack_save;
  (void)old_bottom;
  (void)old_bytes;
#endif
}

// Switching must not fail; if it does, no state can be trusted any more.
inline void switch_or_die(ucontext_t* from, ucontext_t* to) {
  if (swapcontext(from, to) != 0) {
    std::fputs("rnnkern::simt: swapcontext failed\n", stderr);
    std::abort();
  }
}

}  // namespace detail
}  // namespace simt
}  // namespace rnnkern
