// A stack of one-direction layers in one persistent launch, as a wavefront:
// the grid holds a group of blocks per layer (each group planned as that
// layer's own persistent forward on its share of the SMs), and at wavefront
// step s layer l runs its step s - l, so layer l + 1 reads the output layer l
// wrote one wavefront step before. One grid barrier per wavefront step for
// all groups: layers + steps - 1 of them instead of layers * steps, and one
// launch instead of one per layer. The layers above the first also keep
// their units' rows of W_ih on chip and add their input's part of the gates
// each step (the first layer's input projection is one GEMM before the
// launch, as for a single layer). Device code for nvcc and the SIMT emulation.
#pragma once

#include "persistent_backward.h"

namespace rnnkern {
namespace cuda {

// One layer of the wavefront: its forward as a single launch would run it,
// and its input: the layer below's output [N, I] (null for the first), times
// the dropout's noise into `dropped` where there is dropout.
template <typename T>
struct WaveLayerArgs {
  PersistentForwardArgs<T> step;
  const T* w_ih;  // [G*H, I]
  int64_t input_size;
  const T* input;
  const T* noise;
  T* dropped;
};

// A wavefront kernel's argument: its layers' (WaveLayerArgs forward,
// WaveBackwardLayerArgs backward).
template <typename Layer>
struct WavefrontArgs {
  const Layer* layers;  // in device memory
  int64_t count;
  int64_t blocks;  // per layer
  unsigned* barrier;
};

// The input's part of a layer's gates, for a block of the layers above the
// first: its units' G*U rows of W_ih in shared memory (after ForwardBlock's
// operands), and per step x_t W_ih^T added to its units' gates.
template <Mode M, typename T>
struct InputBlock {
  using A = at::opmath_type<T>;
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  static constexpr int64_t G = gates_of<M>();
  const WaveLayerArgs<T>& a;
  int64_t block, j0, units;
  SmemLayout L;
  A* sums;
  X* xs;
  T* w;

  RK_DEVICE_INLINE InputBlock(const WaveLayerArgs<T>& args, int64_t b, unsigned char* smem)
      : a(args),
        block(b),
        j0(b * args.step.units),
        units(args.step.hidden - j0 < args.step.units ? args.step.hidden - j0 : args.step.units),
        L(false, args.input_size, G, args.step.units, args.step.tile, sizeof(T), sizeof(A),
          uses_tensor_cores<T>(), blockDim.x),
        sums(reinterpret_cast<A*>(smem)),
        xs(reinterpret_cast<X*>(smem + L.x_offset)),
        w(reinterpret_cast<T*>(smem + L.w_offset)) {
    if (a.input == nullptr) return;  // the first layer: nothing on chip
    const int64_t I = a.input_size, H = a.step.hidden, U = a.step.units;
    for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
      const int64_t r = i / L.K_p, g = r / U, u = r % U, k = i % L.K_p;
      w[i] = r < G * U && u < units && k < I ? a.w_ih[(g * H + j0 + u) * I + k] : T(0);
    }
  }

  // gates[t] += x_t W_ih^T for the block's units, x_t the layer below's
  // output of step t (written by other blocks before the last barrier) times
  // the noise; block 0 keeps that product of the two for backward.
  template <typename Cache>
  RK_DEVICE_INLINE void add(int64_t t, const Cache& cache) {
    const int64_t I = a.input_size, H = a.step.hidden, U = a.step.units, GH = G * H;
    const int64_t rows = a.step.seq.rows(t), off = a.step.seq.offset(t);
    for (int64_t b0 = 0; b0 < rows; b0 += a.step.tile) {
      const int64_t nb = rows - b0 < a.step.tile ? rows - b0 : a.step.tile;
      __syncthreads();  // the previous pass is done with xs and sums
      for (int64_t i = threadIdx.x; i < L.tile_p * L.K_p; i += blockDim.x) {
        const int64_t lb = i / L.K_p, k = i % L.K_p, at = (off + b0 + lb) * I + k;
        if (lb >= nb || k >= I) {
          xs[i] = X(0);
          continue;
        }
        T x = exchange_load(a.input + at);
        if (a.noise != nullptr) {
          x = T(A(x) * A(a.noise[at]));
          if (block == 0) a.dropped[at] = x;
        }
        xs[i] = X(x);
      }
      __syncthreads();
      block_product(L, w, cache, 0, xs, nb, sums);
      __syncthreads();
      for (int64_t i = threadIdx.x; i < nb * units; i += blockDim.x) {
        const int64_t lb = i / units, u = i % units, j = j0 + u;
        for (int64_t g = 0; g < G; ++g) {
          T& gate = a.step.gates[(off + b0 + lb) * GH + g * H + j];
          gate = T(A(gate) + split_total(L, sums, lb * G * U + g * U + u));
        }
      }
    }
  }
};

// The shared memory a wavefront block needs: its forward's operands, then
// (16-byte aligned) its input's.
RK_HD_INLINE int64_t wavefront_smem_offset(const SmemLayout& forward) {
  return SmemLayout::round_up(forward.bytes, 16);
}

template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_wavefront_kernel(const WavefrontArgs<WaveLayerArgs<T>> a) {
  const int64_t layer = blockIdx.x / a.blocks, block = blockIdx.x % a.blocks;
  const WaveLayerArgs<T>& l = a.layers[layer];
  RK_DYNAMIC_SHARED(unsigned char, smem);
  ForwardBlock<M, T> fb(l.step, block, smem);
  InputBlock<M, T> in(l, block, smem + wavefront_smem_offset(fb.L));
  const int64_t steps = l.step.seq.steps;
  const unsigned blocks = static_cast<unsigned>(a.count * a.blocks);
  for (int64_t s = 0; s < steps + a.count - 1; ++s) {
    const int64_t t = s - layer;
    if (t >= 0 && t < steps) {
      if (layer > 0) in.add(t, fb.cache);
      fb.step(t);
    }
    grid_barrier(a.barrier, static_cast<unsigned>(s + 1), blocks);
  }
  fb.finish();
}

// The backward loops of the same stack in one launch: the top layer first,
// each layer two wavefront steps behind the one above, since a layer's step
// needs the gradient of its output that the layer above forms in the second
// half of its step for the same time (after that step's barrier), and a
// barrier must pass between that write and this read. Layer l + 1's block b
// forms the gradient of the columns of its input that are the units of layer
// l's block b: (dgates W_ih)[:, j] times the dropout's noise.
template <typename T>
struct WaveBackwardLayerArgs {
  PersistentBackwardArgs<T> step;
  const T* w_ih;  // [G*H, I]
  int64_t input_size;
  const T* noise;
  T* below;  // [N, I]: the layer below's grad_output; null for the first
};

// The gradient of a layer's input for the block's columns j (the layers
// above the first): its units' columns of W_ih in shared memory (after
// BackwardBlock's operands), per step (dgates W_ih)[:, j] * noise.
template <Mode M, typename T>
struct BelowBlock {
  using A = at::opmath_type<T>;
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  static constexpr int64_t G = gates_of<M>();
  const WaveBackwardLayerArgs<T>& a;
  int64_t j0, units;
  SmemLayout L;
  A* sums;
  X* ds;
  T* w;

  RK_DEVICE_INLINE BelowBlock(const WaveBackwardLayerArgs<T>& args, int64_t block,
                              unsigned char* smem)
      : a(args),
        j0(block * args.step.units),
        units(args.input_size - j0 < args.step.units ? args.input_size - j0 : args.step.units),
        L(true, args.step.hidden, G, args.step.units, args.step.tile, sizeof(T), sizeof(A),
          uses_tensor_cores<T>(), blockDim.x),
        sums(reinterpret_cast<A*>(smem)),
        ds(reinterpret_cast<X*>(smem + L.x_offset)),
        w(reinterpret_cast<T*>(smem + L.w_offset)) {
    if (a.below == nullptr) return;  // the first layer: nothing on chip
    const int64_t I = a.input_size, GH = G * a.step.hidden;
    for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
      const int64_t u = i / L.K_p, r = i % L.K_p;
      w[i] = u < units && r < GH ? a.w_ih[r * I + j0 + u] : T(0);
    }
  }

  // below[t][:, j] for the step at time t, after the barrier that made every
  // unit's gate gradients of the step visible.
  template <typename Cache>
  RK_DEVICE_INLINE void write(int64_t t, const Cache& cache) {
    const int64_t I = a.input_size, GH = G * a.step.hidden, U = a.step.units;
    const int64_t rows = a.step.seq.rows(t), off = a.step.seq.offset(t);
    for (int64_t b0 = 0; b0 < rows; b0 += a.step.tile) {
      const int64_t nb = rows - b0 < a.step.tile ? rows - b0 : a.step.tile;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < L.tile_p * L.K_p; i += blockDim.x) {
        const int64_t lb = i / L.K_p, r = i % L.K_p;
        ds[i] = lb >= nb || r >= GH ? X(0)
                : X(exchange_load(a.step.dgates + (off + b0 + lb) * GH + r));
      }
      __syncthreads();
      block_product(L, w, cache, 0, ds, nb, sums);
      __syncthreads();
      for (int64_t i = threadIdx.x; i < nb * units; i += blockDim.x) {
        const int64_t lb = i / units, at = (off + b0 + lb) * I + j0 + i % units;
        A v = split_total(L, sums, lb * U + i % units);
        if (a.noise != nullptr) v *= A(a.noise[at]);
        exchange_store(a.below + at, T(v));
      }
    }
  }
};

template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_wavefront_backward_kernel(const WavefrontArgs<WaveBackwardLayerArgs<T>> a) {
  const int64_t layer = blockIdx.x / a.blocks, block = blockIdx.x % a.blocks;
  const WaveBackwardLayerArgs<T>& l = a.layers[layer];
  RK_DYNAMIC_SHARED(unsigned char, smem);
  BackwardBlock<M, T> bb(l.step, block, smem);
  BelowBlock<M, T> below(l, block, smem + wavefront_smem_offset(bb.L));
  const int64_t steps = l.step.seq.steps, lag = 2 * (a.count - 1 - layer);
  const unsigned blocks = static_cast<unsigned>(a.count * a.blocks);
  for (int64_t s = 0; s < steps + 2 * (a.count - 1); ++s) {
    const int64_t k = s - lag;
    const bool on = k >= 0 && k < steps;
    if (on) bb.pointwise(k);
    grid_barrier(a.barrier, static_cast<unsigned>(s + 1), blocks);
    if (on) {
      bb.recurrent(k);
      if (layer > 0) below.write(bb.time(k), bb.cache);
    }
  }
}

}  // namespace cuda
}  // namespace rnnkern
