// float vectors at this compilation's width, RK_VEC_BYTES (64: AVX-512, 32:
// AVX2 + FMA, 16: the baseline, via the compiler's generic vectors): the
// operations the GEMM micro-kernel is written against.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {

#if RK_VEC_BYTES == 64
using VecF = __m512;
RK_INLINE VecF vzero() { return _mm512_setzero_ps(); }
RK_INLINE VecF vload(const float* p) { return _mm512_loadu_ps(p); }
RK_INLINE void vstore(float* p, VecF v) { _mm512_storeu_ps(p, v); }
RK_INLINE VecF vset1(float x) { return _mm512_set1_ps(x); }
RK_INLINE VecF vfma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
RK_INLINE VecF vmul(VecF a, VecF b) { return _mm512_mul_ps(a, b); }
RK_INLINE VecF vadd(VecF a, VecF b) { return _mm512_add_ps(a, b); }
#elif RK_VEC_BYTES == 32
using VecF = __m256;
RK_INLINE VecF vzero() { return _mm256_setzero_ps(); }
RK_INLINE VecF vload(const float* p) { return _mm256_loadu_ps(p); }
RK_INLINE void vstore(float* p, VecF v) { _mm256_storeu_ps(p, v); }
RK_INLINE VecF vset1(float x) { return _mm256_set1_ps(x); }
RK_INLINE VecF vfma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
RK_INLINE VecF vmul(VecF a, VecF b) { return _mm256_mul_ps(a, b); }
RK_INLINE VecF vadd(VecF a, VecF b) { return _mm256_add_ps(a, b); }
#elif RK_VEC_BYTES == 16
typedef float VecF __attribute__((vector_size(16)));
RK_INLINE VecF vzero() { return VecF{}; }
RK_INLINE VecF vload(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
RK_INLINE void vstore(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }
RK_INLINE VecF vset1(float x) { return VecF{} + x; }
RK_INLINE VecF vfma(VecF a, VecF b, VecF c) { return a * b + c; }
RK_INLINE VecF vmul(VecF a, VecF b) { return a * b; }
RK_INLINE VecF vadd(VecF a, VecF b) { return a + b; }
#else
#error "RK_VEC_BYTES must be 16, 32 or 64"
#endif

constexpr int kVecFloats = RK_VEC_BYTES / 4;

}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
