// The CUDA device functions of the SIMT emulation (simt_emulation.h includes
// this after its runtime): barriers, fences, atomics, warp shuffles and votes,
// and the fast-math intrinsics, all as host functions over the scheduler.
#pragma once

#include <cmath>
#include <cstdint>

#include "scheduler.h"

// ---- Device functions ----

// Barrier for all threads of the block: yield to the scheduler, which resumes
// this fiber once every thread of the block has arrived.
inline void __syncthreads() {
  using namespace rnnkern::simt::detail;
  wait_as(runtime_in_kernel("__syncthreads()"), FiberState::kAtBarrier);
}

// Orders this block's held-back global stores before its next atomic, which
// then makes them visible to all blocks (the weak memory model's release;
// cumulative over the block, as after a __syncthreads() on the GPU).
inline void __threadfence() {
  using namespace rnnkern::simt::detail;
  Runtime& r = runtime();
  if (r.running != nullptr) {
    Slot& s = r.slots[r.running->slot];
    s.fenced = s.stores.size();
  }
}
inline void __threadfence_block() {}

// Fibers never run in parallel, so a plain read-modify-write is atomic here.
// Returns the old value. Atomics are visible to every block at once.
inline void rk_simt_release() {
  using namespace rnnkern::simt::detail;
  Runtime& r = runtime();
  ++r.memory_version;
  if (r.running != nullptr) {
    Slot& s = r.slots[r.running->slot];
    if (s.fenced > 0) flush_stores(r, s, s.fenced);
  }
}
template <typename V>
inline V rk_simt_atomic_add(V* address, V val) {
  rk_simt_release();
  const V old = *address;
  *address = old + val;
  return old;
}
inline float atomicAdd(float* address, float val) { return rk_simt_atomic_add(address, val); }
inline double atomicAdd(double* address, double val) { return rk_simt_atomic_add(address, val); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int val) {
  return rk_simt_atomic_add(address, val);
}
inline int atomicAdd(int* address, int val) {  // wraps on overflow, as on the GPU
  rk_simt_release();
  const int old = *address;
  *address = static_cast<int>(static_cast<unsigned int>(old) + static_cast<unsigned int>(val));
  return old;
}

// Warp shuffles and votes: every lane named in `mask` must reach the same op.
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  using namespace rnnkern::simt::detail;
  return from_bits<T>(warp_op(WarpOp::kShflIdx, mask, to_bits(var), src_lane, width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  using namespace rnnkern::simt::detail;
  return from_bits<T>(warp_op(WarpOp::kShflXor, mask, to_bits(var), lane_mask, width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  using namespace rnnkern::simt::detail;
  return from_bits<T>(
      warp_op(WarpOp::kShflDown, mask, to_bits(var), static_cast<int>(delta), width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  using namespace rnnkern::simt::detail;
  return from_bits<T>(
      warp_op(WarpOp::kShflUp, mask, to_bits(var), static_cast<int>(delta), width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  using namespace rnnkern::simt::detail;
  return static_cast<unsigned>(warp_op(WarpOp::kBallot, mask, predicate != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == mask;
}
inline int __any_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) != 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  using namespace rnnkern::simt::detail;
  warp_op(WarpOp::kSync, mask, 0, 0, 32);
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

