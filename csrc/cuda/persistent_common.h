// Pieces of the persistent kernels (persistent.h) that are not about one
// cell: where a step's rows live, the on-chip products, the shared-memory
// layout. Device code for nvcc and the SIMT emulation.
#pragma once

#include <cstdint>

#include "../core/cell_math.h"
#include "../core/macros.h"
#include "shared_memory.h"

namespace rnnkern {
namespace cuda {

// Upper bound of threads per block of the persistent kernels (their launch
// bound: ptxas then keeps registers x threads within one SM's register file).
constexpr int kPersistentThreads = 256;
// The register block of the on-chip products (block_matvec): weight rows and
// rows of h (or of the gate gradients) each warp carries at once.
constexpr int kRowBlock = 4;
constexpr int kBatchBlock = 4;

template <Mode M>
constexpr int gates_of() {
  return M == Mode::LSTM ? 4 : (M == Mode::GRU ? 3 : 1);
}

// The rows of time step t: a dense [steps, batch] sequence when sizes is null,
// else a packed one (device arrays of sizes and row offsets per step).
struct SeqSteps {
  int64_t steps;
  int64_t batch;
  const int64_t* sizes;
  const int64_t* offsets;
  bool reverse;

  RK_HD_INLINE int64_t rows(int64_t t) const { return sizes != nullptr ? sizes[t] : batch; }
  RK_HD_INLINE int64_t offset(int64_t t) const {
    return offsets != nullptr ? offsets[t] : t * batch;
  }
  // The time index of the s-th step in the forward direction of the layer.
  RK_HD_INLINE int64_t forward_time(int64_t s) const { return reverse ? steps - 1 - s : s; }
  // The last step the forward pass runs for row b (it ends there with h_n).
  RK_HD_INLINE int64_t last_time(int64_t b) const {
    if (reverse) return 0;
    if (sizes == nullptr) return steps - 1;
    int64_t lo = 0, hi = steps - 1;  // sizes do not increase: find the last t with sizes[t] > b
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (sizes[mid] > b) lo = mid; else hi = mid - 1;
    }
    return lo;
  }
};

// Sum over the 32 lanes of a warp; every lane gets the total.
template <typename A>
RK_DEVICE_INLINE A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// out[b * ld_out + r] = sum over k of w[r * K + k] * x[b * K + k], for r < rows
// and b < nb, all operands in shared memory. A warp per kRowBlock weight rows,
// its lanes splitting K (consecutive lanes read consecutive words: no bank
// conflicts); kRowBlock x kBatchBlock sums in registers, so each weight element
// is read once per kBatchBlock rows of x and each element of x once per
// kRowBlock weight rows. Called by every thread of the block; the loop bounds
// and conditions around the shuffles are uniform per warp.
template <typename T, typename A>
RK_DEVICE_INLINE void block_matvec(const T* w, int64_t rows, int64_t K, const A* x, int64_t nb,
                                   A* out, int64_t ld_out) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t step = blockDim.x / 32 * kRowBlock;
  for (int64_t r0 = threadIdx.x / 32 * kRowBlock; r0 < rows; r0 += step) {
    for (int64_t b0 = 0; b0 < nb; b0 += kBatchBlock) {
      A acc[kRowBlock][kBatchBlock];
      RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
        RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) acc[r][i] = A(0);
      }
      for (int64_t k = lane; k < K; k += 32) {
        A xk[kBatchBlock];
        RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) {
          xk[i] = b0 + i < nb ? x[(b0 + i) * K + k] : A(0);
        }
        RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
          if (r0 + r < rows) {
            const A wk = A(w[(r0 + r) * K + k]);
            RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) acc[r][i] += wk * xk[i];
          }
        }
      }
      RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
        RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) {
          if (r0 + r < rows && b0 + i < nb) {
            const A sum = warp_sum(acc[r][i]);
            if (lane == 0) out[(b0 + i) * ld_out + r0 + r] = sum;
          }
        }
      }
    }
  }
}

// Dynamic shared memory of a persistent kernel. A block's weights are `rows`
// rows of length K (forward: the G*U gate rows of its units, K = H; backward:
// its U columns of W_hh as rows, K = G*H); per pass it stages `tile` rows of
// the other operand (forward: h; backward: the gate gradients) and writes
// their products [tile, rows] in the accumulator type. On tensor cores the
// staged rows keep the element type and the weights, the staged rows and K are
// zero-padded to the mma shape (rows to 16, K to 16, the tile to 8).
struct SmemLayout {
  int64_t rows, K, tile;        // logical sizes
  int64_t rows_p, K_p, tile_p;  // stored sizes
  int64_t x_offset, w_offset, bytes;  // the products start at byte 0

  RK_HD_INLINE SmemLayout(bool backward, int64_t hidden, int64_t gates, int64_t units,
                          int64_t tile_rows, int64_t elem_bytes, int64_t acc_bytes, bool mma)
      : rows(backward ? units : gates * units),
        K(backward ? gates * hidden : hidden),
        tile(tile_rows),
        rows_p(mma ? round_up(rows, 16) : rows),
        K_p(mma ? round_up(K, 16) : K),
        tile_p(mma ? round_up(tile_rows, 8) : tile_rows),
        x_offset(round_up(tile * rows * acc_bytes, 16)),
        w_offset(round_up(x_offset + tile_p * K_p * (mma ? elem_bytes : acc_bytes), 16)),
        bytes(w_offset + rows_p * K_p * elem_bytes) {}

  RK_HD_INLINE static int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }
};

}  // namespace cuda
}  // namespace rnnkern
