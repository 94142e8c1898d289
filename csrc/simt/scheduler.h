// The scheduler of the SIMT emulation (simt_emulation.h): runs a grid's
// blocks, at most `resident` of them at once, each thread a fiber.
//
// A round resumes every runnable fiber once, resident blocks and the threads
// inside each in a random order drawn from a seeded generator; a fiber runs
// until it waits (__syncthreads, a warp op, a spin-loop poll) or exits. Then
// the waits are resolved: a barrier opens when every thread of the block is
// there, a warp op when every lane of its mask is, and a spinning thread polls
// again. A round in which nothing but polls ran and no memory changed can
// never end: it is reported as a deadlock (on a GPU it hangs), naming the
// blocks that never became resident when the grid is larger than the launch
// claims can be co-resident.
#pragma once

#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fiber.h"

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

// All fibers share one OS thread, so the scheduler writes the resumed fiber's
// indices here before switching to it.
inline thread_local uint3 threadIdx{0, 0, 0};
inline uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace rnnkern {
namespace simt {
namespace detail {

inline constexpr std::uint64_t kDefaultSeed = 0x5eed5eed5eed5eedull;

// Thrown out of a wait into the fibers of an aborted launch, so their frames
// unwind (destructors run) before the stacks are reused.
struct AbortBlock {};

// A global store of the weak memory model not yet visible to other blocks.
struct PendingStore {
  void* address;
  std::size_t bytes;
  std::uint64_t bits;
};

// A resident block: its fibers are fibers[index * threads, (index + 1) * threads).
struct Slot {
  uint3 block{0, 0, 0};
  bool active = false;
  std::uint64_t epoch = 0;  // identifies this block's run; RK_SHARED re-poisons on change
  std::unique_ptr<unsigned char[]> dynamic_smem;
  std::vector<PendingStore> stores;                  // weak memory: in program order
  std::size_t fenced = 0;                            // how many of them precede a fence
  std::unordered_map<void*, std::size_t> latest;     // address -> index in stores
};

struct Runtime {
  std::vector<std::unique_ptr<Fiber>> fibers;  // pooled; a ucontext_t must not move
  std::vector<Slot> slots;
  unsigned threads = 0;  // per block in the current launch
  ucontext_t scheduler_ctx;
  Fiber* running = nullptr;  // fiber being executed, null on the scheduler
  bool in_launch = false;
  bool aborting = false;
  std::exception_ptr error;  // first exception a kernel thread threw
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  std::uint64_t rng = kDefaultSeed;
  std::uint64_t epochs = 0;
  std::size_t dynamic_bytes = 0;
  bool weak_memory = false;
  std::uint64_t memory_version = 0;  // bumped by every store, atomic and fence
  const void* scheduler_stack = nullptr;  // as reported by ASan
  std::size_t scheduler_stack_bytes = 0;
  void* scheduler_fake_stack = nullptr;
};

inline Runtime& runtime() {
  static Runtime r;
  return r;
}

// splitmix64: a fixed generator, so a seed means the same schedule everywhere.
inline std::uint64_t next_random(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename V>
void shuffle(std::vector<V>& v, std::uint64_t& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next_random(rng) % i]);
}

// Makes the first `count` of a block's pending stores visible to every block,
// in program order.
inline void flush_stores(Runtime& r, Slot& s, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    std::memcpy(s.stores[i].address, &s.stores[i].bits, s.stores[i].bytes);
  }
  s.stores.erase(s.stores.begin(), s.stores.begin() + static_cast<std::ptrdiff_t>(count));
  s.fenced = s.fenced > count ? s.fenced - count : 0;
  s.latest.clear();
  for (std::size_t i = 0; i < s.stores.size(); ++i) s.latest[s.stores[i].address] = i;
  ++r.memory_version;
}
inline void flush_stores(Runtime& r, Slot& s) { flush_stores(r, s, s.stores.size()); }

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

// Runs `f` until it waits or finishes.
inline void resume(Runtime& r, Fiber& f) {
  threadIdx = f.tid;
  blockIdx = r.slots[f.slot].block;
  r.running = &f;
  f.started = true;
  asan_start_switch(&r.scheduler_fake_stack, f.stack(), kFiberStackBytes);
  switch_or_die(&r.scheduler_ctx, &f.ctx);
  asan_finish_switch(r.scheduler_fake_stack, nullptr, nullptr);
  r.running = nullptr;
}

// Called on a fiber: wait in `state` until the scheduler resumes it.
inline void wait_as(Runtime& r, FiberState state) {
  Fiber& self = *r.running;
  self.state = state;
  asan_start_switch(&self.asan_fake_stack, r.scheduler_stack, r.scheduler_stack_bytes);
  switch_or_die(&self.ctx, &r.scheduler_ctx);
  asan_finish_switch(self.asan_fake_stack, nullptr, nullptr);
  if (r.aborting) throw AbortBlock{};
}

inline std::string dims_name(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

inline Fiber& fiber(Runtime& r, unsigned slot, unsigned thread) {
  return *r.fibers[std::size_t{slot} * r.threads + thread];
}

inline void start_block(Runtime& r, unsigned slot, std::uint64_t linear, dim3 grid, dim3 block) {
  Slot& s = r.slots[slot];
  s.block = {static_cast<unsigned>(linear % grid.x),
             static_cast<unsigned>(linear / grid.x % grid.y),
             static_cast<unsigned>(linear / (std::uint64_t{grid.x} * grid.y))};
  s.active = true;
  s.epoch = ++r.epochs;
  if (r.dynamic_bytes > 0) std::memset(s.dynamic_smem.get(), 0xFF, r.dynamic_bytes);
  for (unsigned i = 0; i < r.threads; ++i) {
    Fiber& f = fiber(r, slot, i);
    f.tid = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    f.slot = slot;
    f.state = FiberState::kReady;
    f.started = false;
    f.polling = false;
    makecontext(&f.ctx, fiber_entry, 0);  // re-arms the pooled context at the entry
  }
}

// The lanes of a warp-synchronous op that the lowest waiting lane of `warp`
// started; true (and results filled) when all of them have arrived.
inline bool resolve_warp(Runtime& r, unsigned slot, unsigned warp, std::string& failure);

// Resolves the waits of one resident block after a round; returns whether
// anything was released. Sets `failure` for a wait that can never resolve.
inline bool resolve_block(Runtime& r, unsigned slot, std::string& failure) {
  unsigned done = 0, at_barrier = 0;
  bool released = false;
  for (unsigned i = 0; i < r.threads; ++i) {
    const FiberState st = fiber(r, slot, i).state;
    done += st == FiberState::kDone;
    at_barrier += st == FiberState::kAtBarrier;
  }
  Slot& s = r.slots[slot];
  if (done == r.threads) {  // the block exited: its stores are visible, its slot free
    flush_stores(r, s);
    s.active = false;
    return true;
  }
  for (unsigned w = 0; w * 32 < r.threads && failure.empty(); ++w) {
    released |= resolve_warp(r, slot, w, failure);
  }
  if (at_barrier > 0 && at_barrier + done == r.threads) {
    if (done > 0) {
      failure = "rnnkern::simt: divergent __syncthreads() in block " + dims_name(s.block) +
                ": " + std::to_string(at_barrier) + " of " + std::to_string(r.threads) +
                " threads wait at a barrier the others exited without reaching";
      return released;
    }
    for (unsigned i = 0; i < r.threads; ++i) fiber(r, slot, i).state = FiberState::kReady;
    released = true;
  }
  for (unsigned i = 0; i < r.threads; ++i) {
    Fiber& f = fiber(r, slot, i);
    if (f.state == FiberState::kSpinning) {
      f.state = FiberState::kReady;
      f.polling = true;
    }
  }
  return released;
}

inline std::string deadlock_message(Runtime& r, std::uint64_t unstarted, std::uint64_t blocks);

// Unwinds every fiber that is suspended mid-kernel, so no stack holds live
// frames when it is reused.
inline void tear_down(Runtime& r) {
  r.aborting = true;
  for (unsigned s = 0; s < r.slots.size(); ++s) {
    for (unsigned i = 0; i < r.threads && r.slots[s].active; ++i) {
      Fiber& f = fiber(r, s, i);
      if (f.started && f.state != FiberState::kDone) resume(r, f);
    }
    r.slots[s].active = false;
    r.slots[s].stores.clear();
    r.slots[s].latest.clear();
    r.slots[s].fenced = 0;
  }
  r.aborting = false;
}

// Runs every block of the grid to completion, `resident` at most at once.
inline void run_blocks(Runtime& r, dim3 grid, dim3 block, std::uint64_t resident) {
  const std::uint64_t blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  std::uint64_t next = 0;
  std::vector<unsigned> slot_order, ready;
  std::string failure;
  while (failure.empty() && !r.error) {
    bool progress = false;
    slot_order.clear();
    for (unsigned s = 0; s < r.slots.size(); ++s) {
      if (!r.slots[s].active && next < blocks && s < resident) {
        start_block(r, s, next++, grid, block);
        progress = true;
      }
      if (r.slots[s].active) slot_order.push_back(s);
    }
    if (slot_order.empty()) return;
    const std::uint64_t version = r.memory_version;
    shuffle(slot_order, r.rng);
    for (unsigned s : slot_order) {
      ready.clear();
      for (unsigned i = 0; i < r.threads; ++i) {
        if (fiber(r, s, i).state == FiberState::kReady) ready.push_back(i);
      }
      shuffle(ready, r.rng);
      for (unsigned i : ready) {
        Fiber& f = fiber(r, s, i);
        const bool poll = std::exchange(f.polling, false);
        resume(r, f);
        progress |= !poll || f.state != FiberState::kSpinning;
        if (r.error) break;
      }
      if (r.error) break;
    }
    if (r.error) break;
    for (unsigned s : slot_order) {
      progress |= resolve_block(r, s, failure);
      if (!failure.empty()) break;
    }
    if (failure.empty() && !progress && version == r.memory_version) {
      failure = deadlock_message(r, blocks - next, blocks);
    }
  }
  tear_down(r);
  if (r.error) std::rethrow_exception(std::exchange(r.error, nullptr));
  throw std::runtime_error(failure);
}

}  // namespace detail
}  // namespace simt
}  // namespace rnnkern

#include "scheduler_waits.h"
