// Row-major GEMM on the CPU: C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace rnnkern {
namespace cpu {

// While one is alive on a thread, float GEMMs on that thread pack each B
// operand once and reuse the packing for every later call with the same B
// (the weights, at every time step). Open one per op call only: B must not
// change while it lives.
class PackedWeightScope {
 public:
  // A disabled scope packs nothing (and hides any outer one): for op calls
  // with too few steps to pay for the packing.
  explicit PackedWeightScope(bool enabled = true);
  ~PackedWeightScope();
  PackedWeightScope(const PackedWeightScope&) = delete;
  PackedWeightScope& operator=(const PackedWeightScope&) = delete;
};

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc);
// out[m, n] = x[m, k] w[n, k]^T + bias[n] (bias may be null), as gemm() would
// with out starting from the bias, without writing it there first.
void input_gemm(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
                const float* bias, float* out);

// bfloat16 and half: through ATen (no BLAS entry point is exported for them).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, c10::BFloat16 alpha,
          const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
          c10::BFloat16 beta, c10::BFloat16* c, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, c10::Half alpha,
          const c10::Half* a, int64_t lda, const c10::Half* b, int64_t ldb, c10::Half beta,
          c10::Half* c, int64_t ldc);

// C = op(A) B for a product computed once (a weight gradient, the input
// gradient): B is packed on the fly, never kept.
at::Tensor matmul(const at::Tensor& a, bool trans_a, const at::Tensor& b);

}  // namespace cpu
}  // namespace rnnkern
