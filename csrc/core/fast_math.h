// exp / sigmoid / tanh for the gate math.
//
// On the GPU these are the CUDA math functions. On the host they are written
// branch-free (clamp, range reduction, polynomial, exponent bits) so that a
// loop calling them auto-vectorises; the C library's expf/tanhf do not, and a
// scalar loop over them was several times slower than the GEMM it follows.
// Accuracy: float ~2 ulp, double ~2 ulp on exp; tanh/sigmoid are exact
// formulas on top of exp (absolute error near machine epsilon).
#pragma once

#include <cstdint>
#include <cstring>

#include "macros.h"

namespace rnnkern {
namespace fm {

#if defined(__CUDA_ARCH__)

RK_HD_INLINE float exp(float x) { return ::expf(x); }
RK_HD_INLINE double exp(double x) { return ::exp(x); }
RK_HD_INLINE float tanh(float x) { return ::tanhf(x); }
RK_HD_INLINE double tanh(double x) { return ::tanh(x); }

#else

template <typename To, typename From>
RK_INLINE To bits_as(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit cast needs equal sizes");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// Comparisons are written so that NaN falls through unchanged.
RK_INLINE float exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float k = x * 1.44269504088896341f + shifter;
  k -= shifter;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t exponent = (static_cast<int32_t>(k) + 127) << 23;
  return p * bits_as<float>(exponent);
}

RK_INLINE double exp(double x) {
  x = x < -708.0 ? -708.0 : x;
  x = x > 709.0 ? 709.0 : x;
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52
  double k = x * 1.4426950408889634074 + shifter;
  k -= shifter;
  double r = x - k * 6.93147180369123816490e-01;
  r = r - k * 1.90821492927058770002e-10;
  // Taylor series to degree 13 on |r| <= ln2/2: truncation error < 1e-17.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t exponent = static_cast<int64_t>(static_cast<int32_t>(k) + 1023) << 52;
  return p * bits_as<double>(exponent);
}

template <typename T>
RK_INLINE T tanh(T x) {
  return T(1) - T(2) / (exp(T(2) * x) + T(1));
}

#endif

template <typename T>
RK_HD_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

}  // namespace fm
}  // namespace rnnkern
