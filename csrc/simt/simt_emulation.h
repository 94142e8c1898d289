// SIMT emulation: lets CUDA kernel source compile with a host C++ compiler and
// run on the CPU, so kernels can be tested against the CPU ops without a GPU.
//
// Model:
//  * Every thread is a fiber (ucontext, fiber.h) with its own stack. Fibers
//    run one at a time and switch only where CUDA threads synchronise or wait:
//    __syncthreads(), warp shuffles and votes, and polls of a spin loop
//    (spin_load). The code between two such points runs as one piece.
//  * The scheduler (scheduler.h) runs at most `resident` blocks at once (1 for
//    a plain launch; a cooperative launch claims how many the device holds)
//    and picks threads and blocks in a random order drawn from a seeded
//    generator (set_schedule_seed), so a race that a missing barrier allows
//    gives a wrong result for some seeds instead of passing by luck.
//  * A deadlock (every thread waits and none can move; an oversized grid for
//    a grid-wide barrier) and a barrier or warp op that only part of its
//    threads reach make launch() throw after unwinding every thread.
//  * Weak memory (set_weak_memory): a block's global_store()s stay invisible
//    to other blocks until the block releases them: a __threadfence()
//    followed by an atomic (a barrier's arrival), or the block's exit. A
//    missing fence before a grid barrier's arrival thus shows as stale reads
//    (a fence after the arrival does not help: the readers did not wait for
//    it). Atomics and plain stores are always visible at once.
//  * Shared memory is declared with RK_SHARED / RK_DYNAMIC_SHARED (include
//    shared_memory.h from kernel headers), is private to each resident block
//    and is filled with 0xFF bytes (NaN for float and double) before each
//    block, so a read before write shows.
//
//  * mma.sync (m16n8k16, 16-bit inputs, fp32 accumulation) as a warp op that
//    assembles the matrices from the lanes' fragments by PTX's layout.
//
// Not provided: the __shared__ keyword (use RK_SHARED), streams, thread-block
// clusters, other mma shapes, and launches from several OS threads at once.
#pragma once

#if defined(__CUDACC__)
#error "simt_emulation.h emulates CUDA on the host; do not compile it with nvcc"
#endif

#ifndef RNNKERN_SIMT_EMULATION
#define RNNKERN_SIMT_EMULATION 1
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "scheduler.h"

// ---- CUDA keywords: all host code here ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)

namespace rnnkern {
namespace simt {
namespace detail {

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
                     std::uint64_t resident, void (*body)(void*), void* body_arg) {
  Runtime& r = runtime();
  if (r.in_launch) {
    throw std::logic_error("rnnkern::simt::launch: launching from inside a kernel");
  }
  validate(grid, block);
  if (resident < 1) throw std::invalid_argument("rnnkern::simt::launch: resident blocks < 1");
  const std::uint64_t blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  const unsigned slots = static_cast<unsigned>(std::min(resident, blocks));
  r.threads = block.x * block.y * block.z;
  while (r.fibers.size() < std::size_t{slots} * r.threads) {
    r.fibers.push_back(std::make_unique<Fiber>());
  }
  if (r.slots.size() < slots) r.slots.resize(slots);
  for (Slot& s : r.slots) {
    if (!s.dynamic_smem || r.dynamic_bytes != dynamic_shared_bytes) {
      // Exactly the requested size, so ASan can flag an overrun.
      s.dynamic_smem.reset(new unsigned char[dynamic_shared_bytes]);
    }
  }
  r.dynamic_bytes = dynamic_shared_bytes;

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
  run_blocks(r, grid, block, slots);
}

inline Runtime& runtime_in_kernel(const char* what) {
  Runtime& r = runtime();
  if (r.running == nullptr) {
    throw std::logic_error(std::string("rnnkern::simt: ") + what + " used outside a kernel");
  }
  return r;
}

// Storage behind one RK_SHARED declaration: one array per resident block,
// re-poisoned when a new block first reaches it.
template <typename T, std::size_t N>
struct SharedArray {
  static_assert(std::is_trivially_copyable_v<T>, "shared memory holds plain data");
  using Array = T[N];
  struct Entry {
    std::uint64_t epoch = 0;
    Array data;
  };
  std::vector<std::unique_ptr<Entry>> per_slot;

  Array& acquire() {
    Runtime& r = runtime_in_kernel("RK_SHARED");
    const unsigned slot = r.running->slot;
    while (per_slot.size() <= slot) per_slot.push_back(std::make_unique<Entry>());
    Entry& e = *per_slot[slot];
    if (e.epoch != r.slots[slot].epoch) {
      std::memset(static_cast<void*>(e.data), 0xFF, sizeof(e.data));
      e.epoch = r.slots[slot].epoch;
    }
    return e.data;
  }
};

inline unsigned char* dynamic_shared_memory() {
  Runtime& r = runtime_in_kernel("RK_DYNAMIC_SHARED");
  return r.slots[r.running->slot].dynamic_smem.get();
}

template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "at most 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

inline std::uint64_t warp_op(WarpOp op, unsigned mask, std::uint64_t value, int param,
                             int width) {
  Runtime& r = runtime_in_kernel("a warp-synchronous op");
  Fiber& self = *r.running;
  const unsigned thread = (self.tid.z * blockDim.y + self.tid.y) * blockDim.x + self.tid.x;
  if (!(mask >> (thread % 32) & 1u)) {
    throw std::logic_error("rnnkern::simt: a warp op's mask must include the calling lane");
  }
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    throw std::logic_error("rnnkern::simt: a shuffle's width must be a power of 2 up to 32");
  }
  self.warp.op = op;
  self.warp.mask = mask;
  self.warp.value = value;
  self.warp.param = param;
  self.warp.width = width;
  wait_as(r, FiberState::kAtWarp);
  return self.warp.result;
}

}  // namespace detail

// Thread order inside each round is a random permutation drawn from this
// seed; the generator then runs on across launches.
inline void set_schedule_seed(std::uint64_t seed) { detail::runtime().rng = seed; }

// Global stores through global_store() become visible to other blocks only at
// the storing block's next __threadfence() (or its exit).
inline void set_weak_memory(bool on) { detail::runtime().weak_memory = on; }

// kernel<<<grid, block, dynamic_shared_bytes>>>(args...), run to completion,
// one block at a time. Arguments are converted to the kernel's parameter types
// once, as CUDA copies them at launch; each thread then gets its own copy.
// Throws std::invalid_argument for a bad configuration, std::runtime_error for
// a divergent barrier or a deadlock, and rethrows the first exception a kernel
// thread threw. Not thread-safe: launch from one OS thread at a time.
template <typename... KArgs, typename... Args>
void launch_resident(std::uint64_t resident_blocks, void (*kernel)(KArgs...), dim3 grid,
                     dim3 block, std::size_t dynamic_shared_bytes, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "wrong number of kernel arguments");
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  auto body = [&] { std::apply(kernel, params); };
  detail::run_grid(grid, block, dynamic_shared_bytes, resident_blocks,
                   [](void* p) { (*static_cast<decltype(body)*>(p))(); }, &body);
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t dynamic_shared_bytes,
            Args&&... args) {
  launch_resident(1, kernel, grid, block, dynamic_shared_bytes, std::forward<Args>(args)...);
}

// A cooperative launch (cudaLaunchCooperativeKernel) on a device that holds
// `resident_blocks` of these blocks at once: at most that many run
// concurrently, so a grid larger than that deadlocks at its first grid-wide
// barrier, which launch reports. (CUDA refuses such a launch up front; the
// host code must check occupancy itself, and this shows what a wrong check
// would do to an ordinary launch.)
template <typename... KArgs, typename... Args>
void launch_cooperative(std::uint64_t resident_blocks, void (*kernel)(KArgs...), dim3 grid,
                        dim3 block, std::size_t dynamic_shared_bytes, Args&&... args) {
  launch_resident(resident_blocks, kernel, grid, block, dynamic_shared_bytes,
                  std::forward<Args>(args)...);
}

// Memory the blocks of a grid exchange: a store held back under the weak
// memory model, a load that sees its own block's held-back stores.
template <typename T>
void global_store(T* p, T v) {
  detail::Runtime& r = detail::runtime();
  ++r.memory_version;
  if (!r.weak_memory || r.running == nullptr) {
    *p = v;
    return;
  }
  detail::Slot& s = r.slots[r.running->slot];
  void* address = static_cast<void*>(p);
  auto it = s.latest.find(address);
  // Overwrite a held-back store in place only if no fence came after it.
  if (it != s.latest.end() && it->second >= s.fenced && s.stores[it->second].bytes == sizeof(T)) {
    s.stores[it->second].bits = detail::to_bits(v);
  } else {
    s.latest[address] = s.stores.size();
    s.stores.push_back({address, sizeof(T), detail::to_bits(v)});
  }
}

template <typename T>
T global_load(const T* p) {
  detail::Runtime& r = detail::runtime();
  if (r.weak_memory && r.running != nullptr) {
    const detail::Slot& s = r.slots[r.running->slot];
    auto it = s.latest.find(const_cast<void*>(static_cast<const void*>(p)));
    if (it != s.latest.end()) return detail::from_bits<T>(s.stores[it->second].bits);
  }
  return *p;
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: every lane of the warp
// brings its fragments and waits until all 32 have; see scheduler_waits.h.
inline void mma_16x8x16(const std::uint32_t (&a)[4], const std::uint32_t (&b)[2], float (&c)[4],
                        bool half) {
  detail::MmaFragments f{a, b, c, half};
  detail::warp_op(detail::WarpOp::kMma, 0xffffffffu, reinterpret_cast<std::uintptr_t>(&f), 0, 32);
}

// One poll of a spin loop: lets the other threads run, then reads.
template <typename T>
T spin_load(const T* p) {
  detail::wait_as(detail::runtime_in_kernel("spin_load"), detail::FiberState::kSpinning);
  return *static_cast<const volatile T*>(p);
}

}  // namespace simt
}  // namespace rnnkern

#include "device_functions.h"

// ---- Shared memory (shared_memory.h holds the nvcc spellings) ----
#define RK_SHARED(type, name, count)                                             \
  static ::rnnkern::simt::detail::SharedArray<type, (count)> rk_shared_##name; \
  auto& name = rk_shared_##name.acquire()

#define RK_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::rnnkern::simt::detail::dynamic_shared_memory())
