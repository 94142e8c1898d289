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

// Weights each lane keeps in registers for the whole launch, beside their
// copy in shared memory, so the products of its first work item read only the
// staged rows from shared memory: kRowBlock rows x cache_chunks<T>() strided
// elements in the FMA product (96 registers in fp32 and fp64), kCacheSteps A
// fragments of 16 x 16 on tensor cores (4 registers each). A launch may use
// fewer (its `cache` argument): the emulation's tests mix both paths.
template <typename T>
constexpr int cache_chunks() {
  return sizeof(T) == 8 ? 12 : 24;
}
constexpr int kCacheSteps = 24;

// How a block's on-chip product deals its work to its warps: the weight rows
// in `groups` groups (kRowBlock rows; 16 on tensor cores) times K in `splits`
// slices of `slice` elements (a multiple of the lanes' stride) times the
// staged rows in `classes` interleaved classes of batch blocks (kBatchBlock
// rows; 8 on tensor cores), a warp per item, so that few weight rows (the
// backward's U units) or a small K still keep every warp busy. Each split
// writes its own partial sums, which split_total adds in a fixed order:
// results do not depend on the schedule.
struct ProductSplit {
  int64_t groups, splits, slice, classes;

  RK_HD_INLINE ProductSplit(int64_t rows, int64_t K, int64_t tile, int64_t threads, bool mma) {
    const int64_t group_rows = mma ? 16 : kRowBlock, quantum = mma ? 16 : 32;
    const int64_t batch_block = mma ? 8 : kBatchBlock;
    groups = (rows + group_rows - 1) / group_rows;
    const int64_t warps = threads >= 32 ? threads / 32 : 1;
    const int64_t most = (K + 4 * quantum - 1) / (4 * quantum);  // slices of >= 4 quanta
    int64_t s = warps / groups;
    s = s < 1 ? 1 : (s > most ? most : s);
    slice = ((K + s - 1) / s + quantum - 1) / quantum * quantum;
    splits = (K + slice - 1) / slice;
    const int64_t batch_blocks = (tile + batch_block - 1) / batch_block;
    classes = warps / (groups * splits);
    classes = classes < 1 ? 1 : (classes > batch_blocks ? batch_blocks : classes);
  }
  RK_HD_INLINE int64_t items() const { return groups * splits * classes; }
  RK_HD_INLINE int64_t group(int64_t item) const { return item / classes / splits; }
  RK_HD_INLINE int64_t split(int64_t item) const { return item / classes % splits; }
  RK_HD_INLINE int64_t batch_class(int64_t item) const { return item % classes; }
};

// Loads the FMA product's register cache of this warp's first item (zeros
// where it has none); returns how many chunks of it are used.
template <typename T, typename A, int C>
RK_DEVICE_INLINE int load_fma_cache(const T* w, int64_t rows, int64_t K, const ProductSplit& ps,
                                    int64_t cap, A (&cache)[kRowBlock][C]) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t item = threadIdx.x / 32;
  const int64_t r0 = ps.group(item) * kRowBlock, k0 = ps.split(item) * ps.slice;
  const int64_t k1 = K < k0 + ps.slice ? K : k0 + ps.slice;
  const bool has = item < ps.items();
  RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
    RK_UNROLL for (int j = 0; j < C; ++j) {
      const int64_t k = k0 + lane + 32 * j;
      cache[r][j] = has && j < cap && r0 + r < rows && k < k1 ? A(w[(r0 + r) * K + k]) : A(0);
    }
  }
  return static_cast<int>(cap < C ? cap : C);
}

// out[s * split_stride + b * ld_out + r] = the sum over split s's slice of K
// of w[r * K + k] * x[b * K + k], for r < rows and b < nb, the operands in
// shared memory (and `cached` chunks of the warp's first item in `cache`),
// each warp's items as ProductSplit deals them.
// Lanes split the slice (consecutive lanes read consecutive words: no bank
// conflicts); kRowBlock x kBatchBlock sums in registers, so each weight
// element is read once per kBatchBlock rows of x and each element of x once
// per kRowBlock weight rows. Called by every thread of the block; the loop
// bounds and conditions around the shuffles are uniform per warp.
template <typename T, typename A, int C>
RK_DEVICE_INLINE void block_matvec(const T* w, int64_t rows, int64_t K, const ProductSplit& ps,
                                   const A (&cache)[kRowBlock][C], int cached, const A* x,
                                   int64_t nb, A* out, int64_t ld_out, int64_t split_stride) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t item = warp; item < ps.items(); item += warps) {
    const int64_t r0 = ps.group(item) * kRowBlock, k0 = ps.split(item) * ps.slice;
    const int64_t k1 = K < k0 + ps.slice ? K : k0 + ps.slice;
    const int own = item == warp ? cached : 0;  // chunks of this item in `cache`
    A* part = out + ps.split(item) * split_stride;
    const int64_t b_step = ps.classes * kBatchBlock;
    for (int64_t b0 = ps.batch_class(item) * kBatchBlock; b0 < nb; b0 += b_step) {
      A acc[kRowBlock][kBatchBlock];
      RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
        RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) acc[r][i] = A(0);
      }
      RK_UNROLL for (int j = 0; j < C; ++j) {
        const int64_t k = k0 + lane + 32 * j;
        if (j < own && k < k1) {
          A xk[kBatchBlock];
          RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) {
            xk[i] = b0 + i < nb ? x[(b0 + i) * K + k] : A(0);
          }
          RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
            RK_UNROLL for (int i = 0; i < kBatchBlock; ++i) acc[r][i] += cache[r][j] * xk[i];
          }
        }
      }
      for (int64_t k = k0 + lane + 32 * own; k < k1; k += 32) {
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
            if (lane == 0) part[(b0 + i) * ld_out + r0 + r] = sum;
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
// their products [split.splits][tile, rows] in the accumulator type. On
// tensor cores the staged rows keep the element type and the weights, the
// staged rows and K are zero-padded to the mma shape (rows to 16, K to 16,
// the tile to 8). `threads`: the block's, which decide the split.
struct SmemLayout {
  int64_t rows, K, tile;        // logical sizes
  int64_t rows_p, K_p, tile_p;  // stored sizes
  ProductSplit split;
  int64_t split_stride;               // between the splits' partial sums
  int64_t x_offset, w_offset, bytes;  // the products start at byte 0

  RK_HD_INLINE SmemLayout(bool backward, int64_t hidden, int64_t gates, int64_t units,
                          int64_t tile_rows, int64_t elem_bytes, int64_t acc_bytes, bool mma,
                          int64_t threads)
      : rows(backward ? units : gates * units),
        K(backward ? gates * hidden : hidden),
        tile(tile_rows),
        rows_p(mma ? round_up(rows, 16) : rows),
        K_p(mma ? round_up(K, 16) : K),
        tile_p(mma ? round_up(tile_rows, 8) : tile_rows),
        split(rows_p, K_p, tile_p, threads, mma),
        split_stride(tile * rows),
        x_offset(round_up(split.splits * split_stride * acc_bytes, 16)),
        w_offset(round_up(x_offset + tile_p * K_p * (mma ? elem_bytes : acc_bytes), 16)),
        bytes(w_offset + rows_p * K_p * elem_bytes) {}

  RK_HD_INLINE static int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }
};

// The product for element i of [tile, rows]: its splits' partial sums added
// in order.
template <typename A>
RK_DEVICE_INLINE A split_total(const SmemLayout& L, const A* sums, int64_t i) {
  A total = sums[i];
  for (int64_t s = 1; s < L.split.splits; ++s) total += sums[s * L.split_stride + i];
  return total;
}

}  // namespace cuda
}  // namespace rnnkern
