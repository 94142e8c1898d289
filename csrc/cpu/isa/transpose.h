// Transposing copies, for packing weights into the layouts the kernels stream
// (gemm.h's panels of a transposed B, resident.h's slices of W_hh). Packing
// runs once per op call over whole weights, so a scalar element-by-element
// copy (its writes or reads a row apart, rows 2 KB apart aliasing in L1) cost
// as much as a B=1 layer's input projection; 8 x 8 blocks transposed in AVX
// registers read and write whole cache lines.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

#if RK_VEC_BYTES >= 32
// d[c * ld + r] = s[r * ls + c] for r, c < 8.
RK_INLINE void transpose8x8(const float* s, int64_t ls, float* d, int64_t ld) {
  const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ls);
  const __m256 r2 = _mm256_loadu_ps(s + 2 * ls), r3 = _mm256_loadu_ps(s + 3 * ls);
  const __m256 r4 = _mm256_loadu_ps(s + 4 * ls), r5 = _mm256_loadu_ps(s + 5 * ls);
  const __m256 r6 = _mm256_loadu_ps(s + 6 * ls), r7 = _mm256_loadu_ps(s + 7 * ls);
  // Pairs of rows interleaved, then pairs of pairs: each 128-bit half holds
  // 4 x 4 of the result, which the last step puts in place.
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}
constexpr int64_t kTransposeBlock = 8;
#else
constexpr int64_t kTransposeBlock = 1;
#endif

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols. In chunks of
// kTransposeChunk columns, so that the chunk's rows of dst (<= 16 KB for the
// kernels' strides) stay in L1 while blocks of 8 rows of src pass over them.
constexpr int64_t kTransposeChunk = 64;
void transpose_into(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst,
                    int64_t ldd) {
  for (int64_t c0 = 0; c0 < cols; c0 += kTransposeChunk) {
    const int64_t c1 = std::min(cols, c0 + kTransposeChunk);
    int64_t r0 = 0;
#if RK_VEC_BYTES >= 32
    for (; r0 + kTransposeBlock <= rows; r0 += kTransposeBlock) {
      const float* s = src + r0 * lds;
      int64_t c = c0;
      for (; c + kTransposeBlock <= c1; c += kTransposeBlock) {
        transpose8x8(s + c, lds, dst + c * ldd + r0, ldd);
      }
      for (; c < c1; ++c) {
        for (int64_t r = 0; r < kTransposeBlock; ++r) dst[c * ldd + r0 + r] = s[r * lds + c];
      }
    }
#endif
    for (; r0 < rows; ++r0) {
      for (int64_t c = c0; c < c1; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
    }
  }
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
