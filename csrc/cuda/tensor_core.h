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

// out[n * ld_out + r] = sum over k of w[r * K + k] * x[n * K + k] for r < rows
// and n < nb: block_matvec on tensor cores. w is [rows_p, K] and x [8 *
// ceil(nb / 8), K] in shared memory, zero-padded (rows_p and K multiples of
// 16); a warp per 16 x 8 tile of the output, walking K 16 at a time.
template <typename T>
RK_DEVICE_INLINE void block_matvec_mma(const T* w, int64_t rows_p, int64_t K, const T* x,
                                       int64_t nb, float* out, int64_t ld_out, int64_t rows) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane / 4, q = lane % 4;
  const int64_t n_tiles = (nb + 7) / 8, tiles = rows_p / 16 * n_tiles;
  for (int64_t t = threadIdx.x / 32; t < tiles; t += blockDim.x / 32) {
    const int64_t m0 = t / n_tiles * 16, n0 = t % n_tiles * 8;
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const T* wg = w + (m0 + g) * K + 2 * q;
    const T* xg = x + (n0 + g) * K + 2 * q;
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const uint32_t a[4] = {pair_at(wg + k0), pair_at(wg + 8 * K + k0), pair_at(wg + k0 + 8),
                             pair_at(wg + 8 * K + k0 + 8)};
      const uint32_t b[2] = {pair_at(xg + k0), pair_at(xg + k0 + 8)};
      mma_16x8x16<T>(a, b, c);
    }
    RK_UNROLL for (int i = 0; i < 4; ++i) {
      const int64_t r = m0 + g + (i >= 2 ? 8 : 0), n = n0 + 2 * q + (i % 2);
      if (r < rows && n < nb) out[n * ld_out + r] = c[i];
    }
  }
}

}  // namespace cuda
}  // namespace rnnkern
