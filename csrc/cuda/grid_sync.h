// What the blocks of a persistent kernel use to work as one: loads and stores
// of the data they exchange, and a grid-wide barrier. Device code for nvcc and
// for the SIMT emulation (simt_emulation.h), where the exchange stores follow
// a weak memory model and a spin loop yields to the other threads.
#pragma once

#include <cstdint>

#include "../core/macros.h"
#include "shared_memory.h"

namespace rnnkern {
namespace cuda {

#if defined(RNNKERN_SIMT_EMULATION)
template <typename T>
inline void exchange_store(T* p, T v) {
  simt::global_store(p, v);
}
template <typename T>
inline T exchange_load(const T* p) {
  return simt::global_load(p);
}
inline unsigned poll(const unsigned* p) { return simt::spin_load(p); }
inline void spin_pause() {}
#else
// Plain accesses: the barrier's fences order them (data written before a
// block's arrival is read only after every block has arrived).
template <typename T>
__device__ __forceinline__ void exchange_store(T* p, T v) {
  *p = v;
}
template <typename T>
__device__ __forceinline__ T exchange_load(const T* p) {
  return *p;
}
__device__ __forceinline__ unsigned poll(const unsigned* p) {
  return *static_cast<const volatile unsigned*>(p);
}
__device__ __forceinline__ void spin_pause() {
#if __CUDA_ARCH__ >= 700
  __nanosleep(32);
#endif
}
#endif

// Barrier number `generation` (1, 2, ...) of a group of `blocks` blocks (the
// grid, or one of the groups sharing it), on the group's counter, zero at
// launch: every block adds one per barrier, so the n-th barrier is passed
// when the counter reaches n * blocks (the host checks that this fits in 32
// bits). As cooperative groups' grid.sync():
// the block meets at __syncthreads(); one thread releases the block's stores
// (the fence is cumulative over what the barrier ordered before it), arrives,
// spins until all blocks have arrived and fences again (acquire). A single
// block needs only __syncthreads().
RK_DEVICE_INLINE void grid_barrier(unsigned* counter, unsigned generation, unsigned blocks) {
  __syncthreads();
  if (blocks == 1) return;
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    const unsigned target = generation * blocks;
    while (poll(counter) < target) spin_pause();
    __threadfence();
  }
  __syncthreads();
}

// Nothing but `steps` grid barriers: their cost, measured by the caller.
__global__ void __launch_bounds__(256) barrier_kernel(unsigned* counter, int steps) {
  for (int s = 0; s < steps; ++s) grid_barrier(counter, static_cast<unsigned>(s + 1), gridDim.x);
}

}  // namespace cuda
}  // namespace rnnkern
