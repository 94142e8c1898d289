// The persistent kernels' on-chip product on tensor cores, for half and
// bfloat16 (fp32 accumulation): mma.sync m16n8k16 on sm_80+, and its emulation
// (simt_emulation.h's mma_16x8x16, which implements PTX's fragment layout, so
// a wrong fragment index here gives wrong numbers there too). Device code for
// nvcc and the SIMT emulation.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "../core/macros.h"
#include "onchip_product.h"
#include "shared_memory.h"

namespace rnnkern {
namespace cuda {

template <typename T>
constexpr bool uses_tensor_cores() {
  return std::is_same<T, c10::Half>::value || std::is_same<T, c10::BFloat16>::value;
}

// D = A B + C for one warp: A 16x16 (row major), B 16x8 (column major), C/D
// 16x8 fp32. With g = lane / 4 and q = lane % 4, each lane holds
//   a[0] = A[g][2q..2q+1],  a[1] = A[g+8][2q..2q+1],
//   a[2] = A[g][2q+8..+9],  a[3] = A[g+8][2q+8..+9]   (two 16-bit values each)
//   b[0] = B[2q..2q+1][g],  b[1] = B[2q+8..+9][g]
//   c    = C[g][2q], C[g][2q+1], C[g+8][2q], C[g+8][2q+1]
template <typename T>
RK_DEVICE_INLINE void mma_16x8x16(const uint32_t (&a)[4], const uint32_t (&b)[2], float (&c)[4]) {
#if defined(RNNKERN_SIMT_EMULATION)
  simt::mma_16x8x16(a, b, c, std::is_same<T, c10::Half>::value);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<T, c10::Half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// Two consecutive 16-bit elements as one register (4-byte aligned: the
// column is even and every row length a multiple of 16).
template <typename T>
RK_DEVICE_INLINE uint32_t pair_at(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Loads the tensor-core product's register cache: fragment j is k-step
// j % n of this warp's item j / n, n = slice / 16 (zeros past its items);
// returns how many are used.
template <typename T, int S>
RK_DEVICE_INLINE int load_mma_cache(const T* w, int64_t K, const ProductSplit& ps, int64_t cap,
                                    uint32_t (&cache)[S][4]) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, q = lane % 4;
  const int64_t per_item = ps.slice / 16;
  RK_UNROLL for (int j = 0; j < S; ++j) {
    const int64_t item = ps.item_of(threadIdx.x / 32, j / per_item);
    const int64_t m0 = ps.group(item) * 16, k0 = ps.split(item) * ps.slice;
    const int64_t kk = k0 + 16 * (j % per_item);
    const bool in = j < cap && item < ps.items() && kk < (K < k0 + ps.slice ? K : k0 + ps.slice);
    const T* wg = w + (m0 + g) * K + 2 * q + kk;
    cache[j][0] = in ? pair_at(wg) : 0u;
    cache[j][1] = in ? pair_at(wg + 8 * K) : 0u;
    cache[j][2] = in ? pair_at(wg + 8) : 0u;
    cache[j][3] = in ? pair_at(wg + 8 * K + 8) : 0u;
  }
  return static_cast<int>(cap < S ? cap : S);
}

// block_matvec on tensor cores: out[s * split_stride + n * ld_out + r] = the
// sum over split s's slice of K of w[r * K + k] * x[n * K + k], for r < rows
// and n < nb. w is [rows_p, K] and x [8 * ceil(nb / 8), K] in shared memory,
// zero-padded (rows_p and K multiples of 16); a warp per item (16 weight rows
// times a slice of K times a class of 8-row blocks of x, as ProductSplit
// deals them), walking the slice 16 at a time for each block of x, the first
// `cached` fragments of its items from `cache`.
template <typename T, int S>
RK_DEVICE_INLINE void block_matvec_mma(const T* w, int64_t K, const ProductSplit& ps,
                                       const uint32_t (&cache)[S][4], int cached, const T* x,
                                       int64_t nb, float* out, int64_t ld_out, int64_t rows,
                                       int64_t split_stride) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, q = lane % 4;
  const int64_t per_item = ps.slice / 16;
  int64_t i = 0;
  for (int64_t item = threadIdx.x / 32; item < ps.items(); item = ps.item_of(item, 1), ++i) {
    const int64_t m0 = ps.group(item) * 16, k0 = ps.split(item) * ps.slice;
    const int64_t k1 = K < k0 + ps.slice ? K : k0 + ps.slice;
    const int64_t base = i * per_item, own = cached_in_item(cached, i, per_item);
    float* part = out + ps.split(item) * split_stride;
    const T* wg = w + (m0 + g) * K + 2 * q;
    for (int64_t n0 = ps.batch_class(item) * 8; n0 < nb; n0 += ps.classes * 8) {
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const T* xg = x + (n0 + g) * K + 2 * q;
      RK_UNROLL for (int j = 0; j < S; ++j) {
        const int64_t kk = k0 + 16 * (j - base);
        if (j >= base && j - base < own && kk < k1) {  // uniform per warp, as mma.sync needs
          const uint32_t b[2] = {pair_at(xg + kk), pair_at(xg + kk + 8)};
          mma_16x8x16<T>(cache[j], b, c);
        }
      }
      for (int64_t kk = k0 + 16 * own; kk < k1; kk += 16) {
        const uint32_t a[4] = {pair_at(wg + kk), pair_at(wg + 8 * K + kk), pair_at(wg + kk + 8),
                               pair_at(wg + 8 * K + kk + 8)};
        const uint32_t b[2] = {pair_at(xg + kk), pair_at(xg + kk + 8)};
        mma_16x8x16<T>(a, b, c);
      }
      RK_UNROLL for (int e = 0; e < 4; ++e) {
        const int64_t r = m0 + g + (e >= 2 ? 8 : 0), n = n0 + 2 * q + (e % 2);
        if (r < rows && n < nb) part[n * ld_out + r] = c[e];
      }
    }
  }
}

}  // namespace cuda
}  // namespace rnnkern
