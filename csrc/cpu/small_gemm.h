// GEMMs with few rows (a batch of 1-8 sequences in one time step), threaded
// over fixed column ranges. BLAS libraries, tuned for large products, were
// several times slower at these shapes.
#pragma once

#include <cstdint>

#include "gemm_kernels.h"

namespace rnnkern {
namespace cpu {

// Row-major C[M,N] = alpha * A[M,K] op(B) + beta * C with M <= kSmallGemmMaxRows,
// op(B) = B^T for a [N,K] B (trans_b) or B for a [K,N] B. beta == 0 ignores C.
void small_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void small_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

}  // namespace cpu
}  // namespace rnnkern
