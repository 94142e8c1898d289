// The persistent kernels' on-chip product (persistent.h): a block's weight
// rows times the rows of h (or of the gate gradients) it stages each step, on
// FMA units here and on tensor cores in tensor_core.h; how it deals the work
// to its warps, the weights its lanes keep in registers, and the shared-memory
// layout of its operands. Device code for nvcc and the SIMT emulation.
#pragma once

#include <cstdint>

#include "../core/macros.h"
#include "persistent_common.h"

namespace rnnkern {
namespace cuda {

// Weights each lane keeps in registers for the whole launch, beside their
// copy in shared memory, so that its products read only the staged rows from
// shared memory: in the FMA product kRowBlock rows x cache_chunks<T>()
// strided elements (96 registers in fp32 and fp64), on tensor cores
// kCacheSteps A fragments of 16 x 16 (4 registers each), filled with its
// work items in order. A launch may keep fewer (its `cache` argument): the
// emulation's tests mix both paths.
template <typename T>
constexpr int cache_chunks() {
  return sizeof(T) == 8 ? 12 : 24;
}
constexpr int kCacheSteps = 24;

// How a block's product deals its work to its warps: the weight rows in
// `groups` groups (kRowBlock rows; 16 on tensor cores) times K in `splits`
// slices of `slice` elements (a multiple of the lanes' stride; at least four)
// times the staged rows in `classes` interleaved classes of batch blocks
// (kBatchBlock rows; 8 on tensor cores), an item each, warp w taking items w,
// w + warps, ... The slices are as many as leave the busiest warp the least
// work by a count of its instructions (few rows, as the backward's U units,
// then still keep every warp busy); warps left over take batch classes. Each
// split writes its own partial sums, which split_total adds in a fixed order:
// results do not depend on the schedule.
struct ProductSplit {
  int64_t groups, splits, slice, classes, warps;

  RK_HD_INLINE ProductSplit(int64_t rows, int64_t K, int64_t tile, int64_t threads, bool mma) {
    const int64_t group_rows = mma ? 16 : kRowBlock, quantum = mma ? 16 : 32;
    const int64_t batch_block = mma ? 8 : kBatchBlock;
    groups = (rows + group_rows - 1) / group_rows;
    warps = threads >= 32 ? threads / 32 : 1;
    const int64_t most = (K + 4 * quantum - 1) / (4 * quantum);
    // Clocks with t slices: the busiest warp's items, each a walk over the
    // slice (16 FMAs and 8 loads per 32 elements; a dependent mma.sync of some
    // 32 clocks per 16) and its sums (16 warp sums of 5 shuffles), or for FMA
    // all items' instructions over the SM's 4 schedulers, if more.
    const int64_t per_quantum = mma ? 32 : 24, per_item = mma ? 16 : 160;
    auto cost = [&](int64_t t) {
      const int64_t items = groups * t;
      const int64_t item = (K + quantum * t - 1) / (quantum * t) * per_quantum + per_item;
      const int64_t busiest = (items + warps - 1) / warps * item;
      const int64_t issue = mma ? 0 : (items * item + 3) / 4;
      return busiest > issue ? busiest : issue;
    };
    int64_t s = 1;
    for (int64_t t = 2; t <= most && t <= warps; ++t) {
      if (cost(t) < cost(s)) s = t;
    }
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
  // The i-th item of `warp` (past the end when it has fewer).
  RK_HD_INLINE int64_t item_of(int64_t warp, int64_t i) const { return warp + i * warps; }
};

// Of the `per_item` cached quanta of item i of its warp, how many of the
// `cached` the lane holds belong to it (its first ones).
RK_HD_INLINE int64_t cached_in_item(int64_t cached, int64_t i, int64_t per_item) {
  const int64_t left = cached - i * per_item;
  return left < 0 ? 0 : (left > per_item ? per_item : left);
}

// Loads the FMA product's register cache: chunk j of it is chunk j % n of
// this warp's item j / n, n = slice / 32 (zeros past its items); returns how
// many chunks are used.
template <typename T, typename A, int C>
RK_DEVICE_INLINE int load_fma_cache(const T* w, int64_t rows, int64_t K, const ProductSplit& ps,
                                    int64_t cap, A (&cache)[kRowBlock][C]) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t per_item = ps.slice / 32;
  RK_UNROLL for (int j = 0; j < C; ++j) {
    const int64_t item = ps.item_of(threadIdx.x / 32, j / per_item);
    const int64_t r0 = ps.group(item) * kRowBlock, k0 = ps.split(item) * ps.slice;
    const int64_t k = k0 + lane + 32 * (j % per_item);
    const bool in = j < cap && item < ps.items() && k < (K < k0 + ps.slice ? K : k0 + ps.slice);
    RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
      cache[r][j] = in && r0 + r < rows ? A(w[(r0 + r) * K + k]) : A(0);
    }
  }
  return static_cast<int>(cap < C ? cap : C);
}

// out[s * split_stride + b * ld_out + r] = the sum over split s's slice of K
// of w[r * K + k] * x[b * K + k], for r < rows and b < nb, the operands in
// shared memory (the first `cached` chunks of the warp's items in `cache`),
// each warp's items as ProductSplit deals them. Lanes split the slice
// (consecutive lanes read consecutive words: no bank conflicts); kRowBlock x
// kBatchBlock sums in registers, so each weight element is read once per
// kBatchBlock rows of x and each element of x once per kRowBlock weight rows.
// Called by every thread of the block; the loop bounds and conditions around
// the shuffles are uniform per warp.
template <typename T, typename A, int C>
RK_DEVICE_INLINE void block_matvec(const T* w, int64_t rows, int64_t K, const ProductSplit& ps,
                                   const A (&cache)[kRowBlock][C], int cached, const A* x,
                                   int64_t nb, A* out, int64_t ld_out, int64_t split_stride) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t per_item = ps.slice / 32;
  int64_t i = 0;
  for (int64_t item = threadIdx.x / 32; item < ps.items(); item = ps.item_of(item, 1), ++i) {
    const int64_t r0 = ps.group(item) * kRowBlock, k0 = ps.split(item) * ps.slice;
    const int64_t k1 = K < k0 + ps.slice ? K : k0 + ps.slice;
    const int64_t base = i * per_item, own = cached_in_item(cached, i, per_item);
    A* part = out + ps.split(item) * split_stride;
    const int64_t b_step = ps.classes * kBatchBlock;
    for (int64_t b0 = ps.batch_class(item) * kBatchBlock; b0 < nb; b0 += b_step) {
      A acc[kRowBlock][kBatchBlock];
      RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
        RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) acc[r][n] = A(0);
      }
      RK_UNROLL for (int j = 0; j < C; ++j) {
        const int64_t k = k0 + lane + 32 * (j - base);
        if (j >= base && j - base < own && k < k1) {
          A xk[kBatchBlock];
          RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) {
            xk[n] = b0 + n < nb ? x[(b0 + n) * K + k] : A(0);
          }
          RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
            RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) acc[r][n] += cache[r][j] * xk[n];
          }
        }
      }
      for (int64_t k = k0 + lane + 32 * own; k < k1; k += 32) {
        A xk[kBatchBlock];
        RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) {
          xk[n] = b0 + n < nb ? x[(b0 + n) * K + k] : A(0);
        }
        RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
          if (r0 + r < rows) {
            const A wk = A(w[(r0 + r) * K + k]);
            RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) acc[r][n] += wk * xk[n];
          }
        }
      }
      RK_UNROLL for (int r = 0; r < kRowBlock; ++r) {
        RK_UNROLL for (int n = 0; n < kBatchBlock; ++n) {
          if (r0 + r < rows && b0 + n < nb) {
            const A sum = warp_sum(acc[r][n]);
            if (lane == 0) part[(b0 + n) * ld_out + r0 + r] = sum;
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
