// SIMT emulation: lets CUDA kernel source compile with a host C++ compiler and
// run on the CPU, so kernels can be tested against the CPU ops without a GPU.
//
// Model:
//  * Every thread of a block is a fiber (ucontext) with its own stack. Fibers
//    run one at a time and switch only at __syncthreads(), so the code between
//    two barriers runs as one uninterrupted piece per thread.
//  * At each barrier round the threads run in a random order drawn from a
//    seeded generator (set_schedule_seed). A race that a missing barrier allows
//    therefore gives a wrong result for some seeds instead of passing by luck.
//  * Blocks run one after another; blockIdx/blockDim/gridDim are plain globals.
//  * Shared memory is declared with RK_SHARED / RK_DYNAMIC_SHARED (include
//    shared_memory.h from kernel headers) and is filled with 0xFF bytes (NaN
//    for float and double) before each block, so a read before write shows.
//  * A barrier that only part of the block reaches, or an exception thrown by
//    a kernel, makes launch() throw after the block has been unwound.
//
// Not provided: warp intrinsics, the __shared__ keyword (use RK_SHARED),
// streams, and launches from several OS threads at once (the runtime state is
// global).
#pragma once

#if defined(__CUDACC__)
#error "simt_emulation.h emulates CUDA on the host; do not compile it with nvcc"
#endif

#ifndef RNNKERN_SIMT_EMULATION
#define RNNKERN_SIMT_EMULATION 1
#endif

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

// ---- CUDA keywords: all host code here ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)

// ---- Built-in index types and variables ----
struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

// All fibers of a block share one OS thread, so the scheduler stores each
// fiber's index and writes it here before resuming that fiber.
inline thread_local uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace rnnkern {
namespace simt {
namespace detail {

inline constexpr std::size_t kFiberStackBytes = 64 * 1024;
inline constexpr std::uint64_t kDefaultSeed = 0x5eed5eed5eed5eedull;

// Thrown out of __syncthreads() into the waiting fibers of an aborted block,
// so their frames unwind (destructors run) before the stacks are reused.
struct AbortBlock {};

enum class FiberState : unsigned char { kReady, kAtBarrier, kDone };

// One emulated thread. The stack is mmap'ed with a PROT_NONE page at its low
// end, so an overflow faults instead of overwriting a neighbouring stack.
struct Fiber {
  ucontext_t ctx;
  uint3 tid{0, 0, 0};
  FiberState state = FiberState::kReady;
  bool started = false;
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

struct Runtime {
  // Fibers (and their stacks) are pooled across blocks and launches; each
  // lives behind a pointer because a ucontext_t must not move once used.
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<unsigned> order;
  ucontext_t scheduler_ctx;
  Fiber* running = nullptr;  // fiber being executed, null on the scheduler
  bool in_launch = false;
  bool aborting = false;
  std::exception_ptr error;  // first exception a kernel thread threw
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  std::uint64_t rng = kDefaultSeed;
  std::uint64_t block_epoch = 0;  // bumped per block; RK_SHARED re-poisons on change
  std::unique_ptr<unsigned char[]> dynamic_smem;
  std::size_t dynamic_bytes = 0;
  // Scheduler stack as reported by ASan, needed to annotate switches back.
  const void* scheduler_stack = nullptr;
  std::size_t scheduler_stack_bytes = 0;
  void* scheduler_fake_stack = nullptr;
};

inline Runtime& runtime() {
  static Runtime r;
  return r;
}

// splitmix64: a fixed generator, so a seed means the same schedule everywhere
// (std::shuffle and the std distributions differ between libraries).
inline std::uint64_t next_random(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

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

// Exceptions must not unwind across swapcontext, so every one is caught here
// and handed to the scheduler, which rethrows it from launch().
inline void fiber_entry() {
  Runtime& r = runtime();
  Fiber& self = *r.running;
  asan_finish_switch(nullptr, &r.scheduler_stack, &r.scheduler_stack_bytes);
  try {
    r.body(r.body_arg);
  } catch (const AbortBlock&) {
    // Unwound on purpose by tear_down().
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  self.state = FiberState::kDone;
  asan_start_switch(nullptr, r.scheduler_stack, r.scheduler_stack_bytes);  // stack is dead
  switch_or_die(&self.ctx, &r.scheduler_ctx);
  std::abort();  // a finished fiber is never resumed
}

// Runs `f` until it reaches a barrier or finishes.
inline void resume(Runtime& r, Fiber& f) {
  threadIdx = f.tid;
  r.running = &f;
  f.started = true;
  asan_start_switch(&r.scheduler_fake_stack, f.stack(), kFiberStackBytes);
  switch_or_die(&r.scheduler_ctx, &f.ctx);
  asan_finish_switch(r.scheduler_fake_stack, nullptr, nullptr);
  r.running = nullptr;
}

// Unwinds every fiber that is suspended mid-kernel, so the block's stacks
// hold no live frames when they are reused.
inline void tear_down(Runtime& r, unsigned nthreads) {
  r.aborting = true;
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = *r.fibers[i];
    if (f.started && f.state != FiberState::kDone) resume(r, f);
  }
  r.aborting = false;
}

inline std::string block_name() {
  return "(" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
         std::to_string(blockIdx.z) + ")";
}

inline void run_block(Runtime& r, dim3 block, unsigned nthreads) {
  ++r.block_epoch;
  if (r.dynamic_bytes > 0) std::memset(r.dynamic_smem.get(), 0xFF, r.dynamic_bytes);
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = *r.fibers[i];
    f.tid = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    f.state = FiberState::kReady;
    f.started = false;
    makecontext(&f.ctx, fiber_entry, 0);  // re-arms the pooled context at the entry
    r.order[i] = i;
  }
  std::string failure;
  for (;;) {
    // One barrier round: every live thread runs to its next barrier or exit.
    for (unsigned i = nthreads; i > 1; --i) {
      std::swap(r.order[i - 1], r.order[next_random(r.rng) % i]);
    }
    for (unsigned i = 0; i < nthreads && !r.error; ++i) resume(r, *r.fibers[r.order[i]]);
    if (r.error) break;
    unsigned waiting = 0;
    for (unsigned i = 0; i < nthreads; ++i) {
      waiting += r.fibers[i]->state == FiberState::kAtBarrier;
    }
    if (waiting == 0) return;  // the whole block finished
    if (waiting != nthreads) {
      // On the GPU this hangs or is undefined; here it is a loud error.
      failure = "rnnkern::simt: divergent __syncthreads() in block " + block_name() + ": " +
                std::to_string(waiting) + " of " + std::to_string(nthreads) +
                " threads wait at a barrier the others exited without reaching";
      break;
    }
    for (unsigned i = 0; i < nthreads; ++i) r.fibers[i]->state = FiberState::kReady;
  }
  tear_down(r, nthreads);
  if (r.error) std::rethrow_exception(std::exchange(r.error, nullptr));
  throw std::runtime_error(failure);
}

inline std::string dims_name(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// The limits of current NVIDIA GPUs; CUDA fails such a launch with
// cudaErrorInvalidConfiguration.
inline void validate(dim3 grid, dim3 block) {
  const bool block_ok = block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 &&
                        block.y <= 1024 && block.z <= 64 &&
                        std::uint64_t{block.x} * block.y * block.z <= 1024;
  const bool grid_ok = grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu &&
                       grid.y <= 65535 && grid.z <= 65535;
  if (!block_ok || !grid_ok) {
    throw std::invalid_argument("rnnkern::simt::launch: invalid configuration: grid " +
                                dims_name(grid) + ", block " + dims_name(block));
  }
}

inline void run_grid(dim3 grid, dim3 block, std::size_t dynamic_shared_bytes,
                     void (*body)(void*), void* body_arg) {
  Runtime& r = runtime();
  if (r.in_launch) {
    throw std::logic_error("rnnkern::simt::launch: launching from inside a kernel");
  }
  validate(grid, block);
  const unsigned nthreads = block.x * block.y * block.z;
  while (r.fibers.size() < nthreads) r.fibers.push_back(std::make_unique<Fiber>());
  r.order.resize(r.fibers.size());
  if (!r.dynamic_smem || r.dynamic_bytes != dynamic_shared_bytes) {
    // Exactly the requested size, so ASan can flag an overrun.
    r.dynamic_smem.reset(new unsigned char[dynamic_shared_bytes]);
    r.dynamic_bytes = dynamic_shared_bytes;
  }

  struct LaunchScope {
    Runtime& r;
    ~LaunchScope() {
      r.in_launch = false;
      r.body = nullptr;
      r.body_arg = nullptr;
    }
  } scope{r};
  r.in_launch = true;
  r.body = body;
  r.body_arg = body_arg;
  r.error = nullptr;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        run_block(r, block, nthreads);
      }
    }
  }
}

inline Runtime& runtime_in_kernel(const char* what) {
  Runtime& r = runtime();
  if (r.running == nullptr) {
    throw std::logic_error(std::string("rnnkern::simt: ") + what + " used outside a kernel");
  }
  return r;
}

// Storage behind one RK_SHARED declaration: a function-local static, so all
// blocks use the same array, re-poisoned when a block first reaches it.
// Zero-initialised (epoch 0 never matches), hence no static-init guard.
template <typename T, std::size_t N>
struct SharedArray {
  static_assert(std::is_trivially_copyable_v<T>, "shared memory holds plain data");
  using Array = T[N];
  std::uint64_t epoch;
  Array data;

  Array& acquire() {
    Runtime& r = runtime_in_kernel("RK_SHARED");
    if (epoch != r.block_epoch) {
      std::memset(static_cast<void*>(data), 0xFF, sizeof(data));
      epoch = r.block_epoch;
    }
    return data;
  }
};

inline unsigned char* dynamic_shared_memory() {
  return runtime_in_kernel("RK_DYNAMIC_SHARED").dynamic_smem.get();
}

}  // namespace detail

// Thread order inside each barrier round is a random permutation drawn from
// this seed; the generator then runs on across launches.
inline void set_schedule_seed(std::uint64_t seed) { detail::runtime().rng = seed; }

// kernel<<<grid, block, dynamic_shared_bytes>>>(args...), run to completion.
// Arguments are converted to the kernel's parameter types once, as CUDA copies
// them at launch; each thread then gets its own copy. Throws
// std::invalid_argument for a bad configuration, std::runtime_error for a
// divergent barrier, and rethrows the first exception a kernel thread threw.
// Not thread-safe: launch from one OS thread at a time.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t dynamic_shared_bytes,
            Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "wrong number of kernel arguments");
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  auto body = [&] { std::apply(kernel, params); };
  detail::run_grid(grid, block, dynamic_shared_bytes,
                   [](void* p) { (*static_cast<decltype(body)*>(p))(); }, &body);
}

}  // namespace simt
}  // namespace rnnkern

// ---- Device functions ----

// Barrier for all threads of the block: yield to the scheduler, which resumes
// this fiber once every thread of the block has arrived.
inline void __syncthreads() {
  using namespace rnnkern::simt::detail;
  Runtime& r = runtime_in_kernel("__syncthreads()");
  Fiber& self = *r.running;
  self.state = FiberState::kAtBarrier;
  asan_start_switch(&self.asan_fake_stack, r.scheduler_stack, r.scheduler_stack_bytes);
  switch_or_die(&self.ctx, &r.scheduler_ctx);
  asan_finish_switch(self.asan_fake_stack, nullptr, nullptr);
  if (r.aborting) throw AbortBlock{};
}

// Fibers of a block never run in parallel and blocks run one after another,
// so a plain read-modify-write is atomic here. Returns the old value.
inline float atomicAdd(float* address, float val) {
  const float old = *address;
  *address = old + val;
  return old;
}
inline double atomicAdd(double* address, double val) {
  const double old = *address;
  *address = old + val;
  return old;
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int val) {
  const unsigned int old = *address;
  *address = old + val;
  return old;
}
inline int atomicAdd(int* address, int val) {  // wraps on overflow, as on the GPU
  const int old = *address;
  *address = static_cast<int>(static_cast<unsigned int>(old) + static_cast<unsigned int>(val));
  return old;
}

// Fast-math intrinsics, here at full precision. C linkage because glibc's
// <math.h> already declares __expf and __logf that way (without defining them).
extern "C" {
inline float __expf(float x) noexcept { return std::exp(x); }
inline float __logf(float x) noexcept { return std::log(x); }
inline float __fdividef(float x, float y) noexcept { return x / y; }
inline float rsqrtf(float x) noexcept { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) noexcept { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline float __fmaf_rn(float x, float y, float z) noexcept { return std::fma(x, y, z); }
}

// ---- Shared memory (shared_memory.h holds the nvcc spellings) ----
#define RK_SHARED(type, name, count)                                             \
  static ::rnnkern::simt::detail::SharedArray<type, (count)> rk_shared_##name; \
  auto& name = rk_shared_##name.acquire()

#define RK_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::rnnkern::simt::detail::dynamic_shared_memory())
