#include "small_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace rnnkern {
namespace cpu {
namespace {

// Products below this many multiply-adds run on one thread.
constexpr int64_t kMinParallelWork = 64 * 1024;

template <typename T>
void small_gemm_impl(bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                     int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  // Equal contiguous column ranges per thread, the same at every call.
  const int64_t threads = m * n * k < kMinParallelWork ? 1 : at::get_num_threads();
  const int64_t grain = std::max<int64_t>(16, (n + threads - 1) / threads);
  at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
    if (trans_b) {
      dot_rows(m, n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      axpy_rows(m, n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
  });
}

}  // namespace

void small_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  small_gemm_impl(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void small_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                int64_t ldc) {
  small_gemm_impl(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace cpu
}  // namespace rnnkern
