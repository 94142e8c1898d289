// Persistent kernels: the whole time loop of one layer-direction in one
// launch, with this block's share of W_hh read from global memory once and
// kept in shared memory (and registers) for every step. This file: what the
// forward and backward (persistent_backward.h) share, and the forward.
//
// Each block owns `units` consecutive hidden units j. Forward, it keeps all
// the gate rows of its units (W_hh[g*H + j, :]), so the gate math and c stay
// in the block and only h is exchanged: each step writes h into that step's
// own rows of the output, which the next step reads, so one grid barrier per
// step suffices (nothing is overwritten that a slower block may still read).
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
// (split_total adds them), the first `cached` chunks or fragments of the
// weights from `cache` (0: a product whose weights it does not hold);
// tensor cores for 16-bit weights.
template <typename T, typename A, typename X>
RK_DEVICE_INLINE void block_product(const SmemLayout& L, const T* w,
                                    const WeightCache<T, A>& cache, int cached, const X* x,
                                    int64_t nb, A* out) {
  if constexpr (uses_tensor_cores<T>()) {
    block_matvec_mma(w, L.K_p, L.split, cache.regs, cached, x, nb, out, L.rows, L.rows,
                     L.split_stride);
  } else {
    block_matvec(w, L.rows, L.K, L.split, cache.regs, cached, x, nb, out, L.rows,
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

// One block's part of a layer-direction's forward: its units' gate rows of
// W_hh loaded into shared memory (and registers) once, then one step at a
// time (persistent_forward_block; the wavefront's layers, persistent_wavefront.h).
template <Mode M, typename T>
struct ForwardBlock {
  using A = at::opmath_type<T>;
  // Half and bfloat16 stage h in their own type for the tensor cores.
  using X = std::conditional_t<uses_tensor_cores<T>(), T, A>;
  static constexpr int64_t G = gates_of<M>();
  const PersistentForwardArgs<T>& p;
  int64_t j0, units;
  SmemLayout L;
  A* sums;  // [splits][tile, G*U]
  X* hs;    // [tile_p, K_p]
  T* w;     // [rows_p, K_p]
  WeightCache<T, A> cache;

  RK_DEVICE_INLINE ForwardBlock(const PersistentForwardArgs<T>& args, int64_t block,
                                unsigned char* smem)
      : p(args),
        j0(block * args.units),
        units(args.hidden - j0 < args.units ? args.hidden - j0 : args.units),
        L(false, args.hidden, G, args.units, args.tile, sizeof(T), sizeof(A),
          uses_tensor_cores<T>(), blockDim.x),
        sums(reinterpret_cast<A*>(smem)),
        hs(reinterpret_cast<X*>(smem + L.x_offset)),
        w(reinterpret_cast<T*>(smem + L.w_offset)) {
    const int64_t H = p.hidden, U = p.units;
    for (int64_t i = threadIdx.x; i < L.rows_p * L.K_p; i += blockDim.x) {
      const int64_t r = i / L.K_p, g = r / U, u = r % U, k = i % L.K_p;
      w[i] = r < G * U && u < units && k < H ? p.w_hh[(g * H + j0 + u) * H + k] : T(0);
    }
    __syncthreads();
    load_weight_cache(L, w, p.cache, cache);
  }

  // The s-th step of the loop: h' W_hh^T for the block's units, their
  // pointwise step, h into the step's rows of the output.
  RK_DEVICE_INLINE void step(int64_t s) {
    const int64_t H = p.hidden, U = p.units, GH = G * H, GU = G * U;
    const SeqSteps& seq = p.seq;
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
      block_product(L, w, cache, cache.used, hs, nb, sums);
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
  }

  // h_n of the block's units, after the barrier that ends the last step
  // (which also keeps h0, p.h, intact until every block has read it).
  RK_DEVICE_INLINE void finish() {
    const int64_t H = p.hidden;
    for (int64_t i = threadIdx.x; i < p.seq.batch * units; i += blockDim.x) {
      const int64_t b = i / units, j = j0 + i % units;
      p.h[b * H + j] = exchange_load(p.output + (p.seq.offset(p.seq.last_time(b)) + b) * H + j);
    }
  }
};

// Block `block` of the `blocks` that run the forward of one layer-direction.
template <Mode M, typename T>
RK_DEVICE_INLINE void persistent_forward_block(const PersistentForwardArgs<T>& p, int64_t block,
                                               int64_t blocks) {
  RK_DYNAMIC_SHARED(unsigned char, smem);
  ForwardBlock<M, T> fb(p, block, smem);
  for (int64_t s = 0; s < p.seq.steps; ++s) {
    fb.step(s);
    grid_barrier(p.barrier, static_cast<unsigned>(s + 1), static_cast<unsigned>(blocks));
  }
  fb.finish();
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

}  // namespace cuda
}  // namespace rnnkern
