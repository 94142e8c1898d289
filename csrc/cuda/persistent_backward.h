// The persistent backward kernels (persistent.h has the forward and what
// both share): each block keeps the columns W_hh[:, j] of its units on chip.
// A step first runs the pointwise backward of its units (dgates out, into the
// step's own rows), then, after one grid barrier, reads every unit's gate
// gradients to form its units' share of dh' = dgates_h W_hh. The weight
// gradients stay one GEMM each after the loop (layer_op.h).
#pragma once

#include "persistent.h"

namespace rnnkern {
namespace cuda {

template <typename T>
struct PersistentBackwardArgs {
  SeqSteps seq;
  int64_t hidden;
  int64_t units;
  int64_t tile;
  int64_t cache;
  const T* w_hh;  // [G*H, H]
  const T* gates;
  const T* extra;
  const T* h_prev;
  const T* output;
  const T* grad_output;
  T* dh;        // [B, H] state
  T* dc;        // LSTM: [B, H] state
  T* dgates;    // [N, G*H]
  T* dgates_h;  // [N, G*H]; equal to dgates except for the GRU
  T* stage;     // [B, G*H] scratch, element (b, g*H + j) private to its thread
  T* stage_x;   // GRU: [B, G*H] the same for the input-side gate gradients
  T* grad_stage;  // [B, H] or null: grad_output written by other blocks (the
                  // wavefront's layers below the top) is read through it
  unsigned* barrier;
};

// One block's part of a layer-direction's backward loop: its units' columns
// of W_hh loaded into shared memory (and registers) once, then per step the
// pointwise part, a grid barrier, the recurrent part (persistent_backward_block;
// the wavefront's layers, persistent_wavefront.h).
template <Mode M, typename T>
struct BackwardBlock {
  using A = at::opmath_type<T>;
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  static constexpr int64_t G = gates_of<M>();
  const PersistentBackwardArgs<T>& p;
  int64_t j0, units;
  SmemLayout L;
  A* sums;  // [splits][tile, U]
  X* ds;    // [tile_p, K_p]
  T* w;     // [rows_p, K_p]: W_hh^T rows of the units
  WeightCache<T, A> cache;

  RK_DEVICE_INLINE BackwardBlock(const PersistentBackwardArgs<T>& args, int64_t block,
                                 unsigned char* smem)
      : p(args),
        j0(block * args.units),
        units(args.hidden - j0 < args.units ? args.hidden - j0 : args.units),
        L(true, args.hidden, G, args.units, args.tile, sizeof(T), sizeof(A),
          uses_tensor_cores<T>(), blockDim.x),
        sums(reinterpret_cast<A*>(smem)),
        ds(reinterpret_cast<X*>(smem + L.x_offset)),
        w(reinterpret_cast<T*>(smem + L.w_offset)) {
    const int64_t H = p.hidden;
    for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
      const int64_t u = i / L.K_p, r = i % L.K_p;
      w[i] = u < units && r < G * H ? p.w_hh[r * H + j0 + u] : T(0);
    }
    __syncthreads();
    load_weight_cache(L, w, p.cache, cache);
  }

  // The time of the s-th step: backward walks the forward's steps the other way.
  RK_DEVICE_INLINE int64_t time(int64_t s) const {
    return p.seq.forward_time(p.seq.steps - 1 - s);
  }

  // The pointwise backward of the block's units at step s: their gate
  // gradients into the step's rows, for every block to read after the barrier.
  RK_DEVICE_INLINE void pointwise(int64_t s) {
    const int64_t H = p.hidden, GH = G * H, t = time(s);
    const int64_t rows = p.seq.rows(t), off = p.seq.offset(t);
    const T* grad_out = p.grad_output ? p.grad_output + off * H : nullptr;
    __syncthreads();  // the previous step's dh is complete
    if (grad_out != nullptr && p.grad_stage != nullptr) {
      // The same thread reads each element below (the same loop).
      for (int64_t i = threadIdx.x; i < rows * units; i += blockDim.x) {
        const int64_t b = i / units, j = j0 + i % units;
        p.grad_stage[b * H + j] = exchange_load(grad_out + b * H + j);
      }
      grad_out = p.grad_stage;
    }
    const BackwardStep<T> step{M,
                               rows,
                               H,
                               p.gates + off * GH,
                               p.extra ? p.extra + off * H : nullptr,
                               p.h_prev + off * H,
                               p.output + off * H,
                               grad_out,
                               p.dh,
                               p.dc,
                               M == Mode::GRU ? p.stage_x : p.stage,
                               p.stage};
    for (int64_t i = threadIdx.x; i < rows * units; i += blockDim.x) {
      const int64_t b = i / units, j = j0 + i % units;
      backward_element<M>(step, b, j);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t col = g * H + j;
        exchange_store(p.dgates_h + (off + b) * GH + col, p.stage[b * GH + col]);
        if (M == Mode::GRU) {
          exchange_store(p.dgates + (off + b) * GH + col, p.stage_x[b * GH + col]);
        }
      }
    }
  }

  // After the barrier: the block's units' share of dh' = dgates_h W_hh.
  RK_DEVICE_INLINE void recurrent(int64_t s) {
    const int64_t H = p.hidden, U = p.units, GH = G * H, t = time(s);
    const int64_t rows = p.seq.rows(t), off = p.seq.offset(t);
    for (int64_t b0 = 0; b0 < rows; b0 += p.tile) {
      const int64_t nb = rows - b0 < p.tile ? rows - b0 : p.tile;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < L.tile_p * L.K_p; i += blockDim.x) {
        const int64_t lb = i / L.K_p, r = i % L.K_p;
        ds[i] = lb >= nb || r >= GH ? X(0)
                : X(exchange_load(p.dgates_h + (off + b0 + lb) * GH + r));
      }
      __syncthreads();
      block_product(L, w, cache, cache.used, ds, nb, sums);
      __syncthreads();
      for (int64_t i = threadIdx.x; i < nb * units; i += blockDim.x) {
        const int64_t lb = i / units, u = i % units;
        T& dh = p.dh[(b0 + lb) * H + j0 + u];
        // The GRU's step left the direct part of dh' there; the others add nothing.
        const A sum = split_total(L, sums, lb * U + u);
        dh = M == Mode::GRU ? T(A(dh) + sum) : T(sum);
      }
    }
  }
};

// Block `block` of the `blocks` that run the backward of one layer-direction.
template <Mode M, typename T>
RK_DEVICE_INLINE void persistent_backward_block(const PersistentBackwardArgs<T>& p,
                                                int64_t block, int64_t blocks) {
  RK_DYNAMIC_SHARED(unsigned char, smem);
  BackwardBlock<M, T> bb(p, block, smem);
  for (int64_t s = 0; s < p.seq.steps; ++s) {
    bb.pointwise(s);
    grid_barrier(p.barrier, static_cast<unsigned>(s + 1), static_cast<unsigned>(blocks));
    bb.recurrent(s);
  }
}

template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_backward_kernel(const PersistentBackwardArgs<T> p) {
  persistent_backward_block<M>(p, blockIdx.x, gridDim.x);
}

// The backward loops of a bidirectional layer's two directions in one grid,
// as persistent_forward_pair_kernel.
template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_backward_pair_kernel(const PersistentBackwardArgs<T> first,
                                    const PersistentBackwardArgs<T> second, int64_t first_blocks) {
  if (blockIdx.x < first_blocks) {
    persistent_backward_block<M>(first, blockIdx.x, first_blocks);
  } else {
    persistent_backward_block<M>(second, blockIdx.x - first_blocks, gridDim.x - first_blocks);
  }
}

}  // namespace cuda
}  // namespace rnnkern
