// Persistent kernels: the whole time loop of one layer-direction in one
// launch, with this block's share of W_hh read from global memory once and
// kept in shared memory for every step.
//
// Each block owns `units` consecutive hidden units j. Forward, it keeps all
// the gate rows of its units (W_hh[g*H + j, :]), so the gate math and c stay
// in the block and only h is exchanged: each step writes h into that step's
// own rows of the output, which the next step reads, so one grid barrier per
// step suffices (nothing is overwritten that a slower block may still read).
// Backward, it keeps the columns W_hh[:, j] of its units: a step first runs
// the pointwise backward of its units (dgates out, into the step's own rows),
// then, after one barrier, reads every unit's gate gradients to form its
// units' share of dh' = dgates_h W_hh. The weight gradients stay one GEMM each
// after the loop (layer_op.h).
//
// The per-element math and memory layout are step_elements.h's, as in the
// per-step kernels; the values other blocks read go through exchange_store,
// staged through a row-private buffer (`stage`) because forward_element and
// backward_element write with plain stores. A grid of one block (the tier for
// small H) never touches global memory for the barrier.
#pragma once

#include <ATen/OpMathType.h>

#include "../core/step_elements.h"
#include "grid_sync.h"
#include "onchip_product.h"
#include "persistent_common.h"
#include "tensor_core.h"

namespace rnnkern {
namespace cuda {

// The weights a lane keeps in registers (persistent_common.h): FMA rows and
// chunks, or tensor-core A fragments.
template <typename T, typename A>
struct WeightCache {
  std::conditional_t<uses_tensor_cores<T>(), uint32_t[kCacheSteps][4],
                     A[kRowBlock][cache_chunks<T>()]>
      regs;
  int used;
};

// Fills the cache from the block's weights in shared memory (after the
// __syncthreads that ends their loading), at most `cap` chunks or fragments.
template <typename T, typename A>
RK_DEVICE_INLINE void load_weight_cache(const SmemLayout& L, const T* w, int64_t cap,
                                        WeightCache<T, A>& cache) {
  if constexpr (uses_tensor_cores<T>()) {
    cache.used = load_mma_cache(w, L.K_p, L.split, cap, cache.regs);
  } else {
    cache.used = load_fma_cache(w, L.rows, L.K, L.split, cap, cache.regs);
  }
}

// The block's on-chip product in layout L: the splits' partial sums of
// out[n * L.rows + r] for the staged rows n < nb and the weight rows r
// (split_total adds them); tensor cores for 16-bit weights.
template <typename T, typename A, typename X>
RK_DEVICE_INLINE void block_product(const SmemLayout& L, const T* w,
                                    const WeightCache<T, A>& cache, const X* x, int64_t nb,
                                    A* out) {
  if constexpr (uses_tensor_cores<T>()) {
    block_matvec_mma(w, L.K_p, L.split, cache.regs, cache.used, x, nb, out, L.rows, L.rows,
                     L.split_stride);
  } else {
    block_matvec(w, L.rows, L.K, L.split, cache.regs, cache.used, x, nb, out, L.rows,
                 L.split_stride);
  }
}

template <typename T>
struct PersistentForwardArgs {
  SeqSteps seq;
  int64_t hidden;
  int64_t units;  // hidden units per block
  int64_t tile;   // rows of h per pass over the weights
  int64_t cache;  // most weight chunks (fragments) a lane keeps in registers
  const T* w_hh;  // [G*H, H]
  const T* bias_hn;
  T* gates;    // [N, G*H]: input projection in, activations out
  T* gates_h;  // GRU: [B, 3H] scratch
  T* h;        // [B, H]: h0 in, h_n out
  T* c;        // LSTM: [B, H]
  T* output;   // [N, H]
  T* saved_h_prev;
  T* saved_extra;
  T* stage;           // [B, H] scratch, element (b, j) private to its thread
  unsigned* barrier;  // zero at launch
};

// Block `block` of the `blocks` that run the forward of one layer-direction.
template <Mode M, typename T>
RK_DEVICE_INLINE void persistent_forward_block(const PersistentForwardArgs<T>& p, int64_t block,
                                               int64_t blocks) {
  using A = at::opmath_type<T>;
  // Half and bfloat16 stage h in their own type for the tensor cores.
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  constexpr int64_t G = gates_of<M>();
  const int64_t H = p.hidden, U = p.units, GH = G * H, GU = G * U;
  const int64_t j0 = block * U;
  const int64_t units = H - j0 < U ? H - j0 : U;
  const SmemLayout L(false, H, G, U, p.tile, sizeof(T), sizeof(A), uses_tensor_cores<T>(),
                     blockDim.x);
  RK_DYNAMIC_SHARED(unsigned char, smem);
  A* sums = reinterpret_cast<A*>(smem);              // [tile, G*U]
  X* hs = reinterpret_cast<X*>(smem + L.x_offset);   // [tile_p, K_p]
  T* w = reinterpret_cast<T*>(smem + L.w_offset);    // [rows_p, K_p]
  for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
    const int64_t r = i / L.K_p, g = r / U, u = r % U, k = i % L.K_p;
    w[i] = r < GU && u < units && k < H ? p.w_hh[(g * H + j0 + u) * H + k] : T(0);
  }
  __syncthreads();
  WeightCache<T, A> cache;
  load_weight_cache(L, w, p.cache, cache);
  const SeqSteps& seq = p.seq;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = seq.forward_time(s);
    const int64_t rows = seq.rows(t), off = seq.offset(t);
    const int64_t t_prev = seq.reverse ? t + 1 : t - 1;
    const int64_t rows_prev = s > 0 ? seq.rows(t_prev) : 0;
    const T* out_prev = s > 0 ? p.output + seq.offset(t_prev) * H : nullptr;
    T* gates = p.gates + off * GH;
    for (int64_t b0 = 0; b0 < rows; b0 += p.tile) {
      const int64_t nb = rows - b0 < p.tile ? rows - b0 : p.tile;
      __syncthreads();  // the previous pass is done with hs and sums
      for (int64_t i = threadIdx.x; i < L.tile_p * L.K_p; i += blockDim.x) {
        const int64_t lb = i / L.K_p, b = b0 + lb, k = i % L.K_p;
        // Rows that were active last step continue from it; the others start.
        hs[i] = lb >= nb || k >= H ? X(0)
                : X(b < rows_prev ? exchange_load(out_prev + b * H + k) : p.h[b * H + k]);
      }
      __syncthreads();
      block_product(L, w, cache, hs, nb, sums);
      __syncthreads();
      for (int64_t i = threadIdx.x; i < nb * units; i += blockDim.x) {
        const int64_t lb = i / units, u = i % units, b = b0 + lb, j = j0 + u;
        const T h_prev = T(hs[lb * L.K_p + j]);
        if (p.saved_h_prev != nullptr) p.saved_h_prev[(off + b) * H + j] = h_prev;
        for (int64_t g = 0; g < G; ++g) {
          const A sum = split_total(L, sums, lb * GU + g * U + u);
          if (M == Mode::GRU) {
            p.gates_h[b * GH + g * H + j] = T(sum);
          } else {
            T& gate = gates[b * GH + g * H + j];
            gate = T(A(gate) + sum);
          }
        }
        p.stage[b * H + j] = h_prev;  // the GRU reads h' from its output slot
        const ForwardStep<T> step{M,       rows,    H,           gates,
                                  p.gates_h, p.bias_hn, p.stage, p.c,
                                  p.stage, p.saved_extra ? p.saved_extra + off * H : nullptr};
        forward_element<M>(step, b, j);
        exchange_store(p.output + (off + b) * H + j, p.stage[b * H + j]);
      }
    }
    // The last barrier also keeps h0 (p.h) intact until every block has read it.
    grid_barrier(p.barrier, static_cast<unsigned>(s + 1), static_cast<unsigned>(blocks));
  }
  for (int64_t i = threadIdx.x; i < seq.batch * units; i += blockDim.x) {
    const int64_t b = i / units, j = j0 + i % units;
    p.h[b * H + j] = exchange_load(p.output + (seq.offset(seq.last_time(b)) + b) * H + j);
  }
}

template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_forward_kernel(const PersistentForwardArgs<T> p) {
  persistent_forward_block<M>(p, blockIdx.x, gridDim.x);
}

// The two directions of a bidirectional layer side by side in one grid: the
// first `first_blocks` blocks run `first`, the others `second`, each group
// meeting at its own barrier.
template <Mode M, typename T>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_forward_pair_kernel(const PersistentForwardArgs<T> first,
                                   const PersistentForwardArgs<T> second, int64_t first_blocks) {
  if (blockIdx.x < first_blocks) {
    persistent_forward_block<M>(first, blockIdx.x, first_blocks);
  } else {
    persistent_forward_block<M>(second, blockIdx.x - first_blocks, gridDim.x - first_blocks);
  }
}

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
  unsigned* barrier;
};

// Block `block` of the `blocks` that run the backward of one layer-direction.
template <Mode M, typename T>
RK_DEVICE_INLINE void persistent_backward_block(const PersistentBackwardArgs<T>& p,
                                                int64_t block, int64_t blocks) {
  using A = at::opmath_type<T>;
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  constexpr int64_t G = gates_of<M>();
  const int64_t H = p.hidden, U = p.units, GH = G * H;
  const int64_t j0 = block * U;
  const int64_t units = H - j0 < U ? H - j0 : U;
  const SmemLayout L(true, H, G, U, p.tile, sizeof(T), sizeof(A), uses_tensor_cores<T>(),
                     blockDim.x);
  RK_DYNAMIC_SHARED(unsigned char, smem);
  A* sums = reinterpret_cast<A*>(smem);              // [tile, U]
  X* ds = reinterpret_cast<X*>(smem + L.x_offset);   // [tile_p, K_p]
  T* w = reinterpret_cast<T*>(smem + L.w_offset);    // [rows_p, K_p]: W_hh^T rows of the units
  for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
    const int64_t u = i / L.K_p, r = i % L.K_p;
    w[i] = u < units && r < GH ? p.w_hh[r * H + j0 + u] : T(0);
  }
  __syncthreads();
  WeightCache<T, A> cache;
  load_weight_cache(L, w, p.cache, cache);
  const SeqSteps& seq = p.seq;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = seq.forward_time(seq.steps - 1 - s);  // backward walks the other way
    const int64_t rows = seq.rows(t), off = seq.offset(t);
    const BackwardStep<T> step{M,
                               rows,
                               H,
                               p.gates + off * GH,
                               p.extra ? p.extra + off * H : nullptr,
                               p.h_prev + off * H,
                               p.output + off * H,
                               p.grad_output ? p.grad_output + off * H : nullptr,
                               p.dh,
                               p.dc,
                               M == Mode::GRU ? p.dgates + off * GH : p.stage,
                               p.stage};
    __syncthreads();  // the previous step's dh is complete
    for (int64_t i = threadIdx.x; i < rows * units; i += blockDim.x) {
      const int64_t b = i / units, j = j0 + i % units;
      backward_element<M>(step, b, j);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t col = g * H + j;
        exchange_store(p.dgates_h + (off + b) * GH + col, p.stage[b * GH + col]);
      }
    }
    grid_barrier(p.barrier, static_cast<unsigned>(s + 1), static_cast<unsigned>(blocks));
    for (int64_t b0 = 0; b0 < rows; b0 += p.tile) {
      const int64_t nb = rows - b0 < p.tile ? rows - b0 : p.tile;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < L.tile_p * L.K_p; i += blockDim.x) {
        const int64_t lb = i / L.K_p, r = i % L.K_p;
        ds[i] = lb >= nb || r >= GH ? X(0)
                : X(exchange_load(p.dgates_h + (off + b0 + lb) * GH + r));
      }
      __syncthreads();
      block_product(L, w, cache, ds, nb, sums);
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
