// The inner loops of GEMMs with few rows (m <= 8): a batch of a few sequences
// times a weight matrix, where the cost is streaming the weight, not the
// arithmetic. Both read each weight element once per call, vectorised along
// its contiguous dimension, and compute the output columns [n0, n1) only, so
// that threads can split a weight between them in fixed ranges.
//
// small_gemm() runs them threaded over fixed column ranges: BLAS libraries,
// tuned for large products, were several times slower at these shapes.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

template <typename T>
inline T combine(T alpha, T acc, T beta, T old) {
  return beta == T(0) ? alpha * acc : alpha * acc + beta * old;
}

// C[:, n0:n1] = alpha * A B^T + beta * C for A [m,K] and a row-major B [N,K]:
// dot products, four rows of B at a time so each load of A serves four.
template <typename T>
void dot_rows(int64_t m, int64_t n0, int64_t n1, int64_t k, T alpha, const T* a, int64_t lda,
              const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const T* b0 = b + n * ldb;
    const T* b1 = b0 + ldb;
    const T* b2 = b1 + ldb;
    const T* b3 = b2 + ldb;
    for (int64_t i = 0; i < m; ++i) {
      const T* ai = a + i * lda;
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t p = 0; p < k; ++p) {
        s0 += ai[p] * b0[p];
        s1 += ai[p] * b1[p];
        s2 += ai[p] * b2[p];
        s3 += ai[p] * b3[p];
      }
      T* ci = c + i * ldc + n;
      ci[0] = combine(alpha, s0, beta, ci[0]);
      ci[1] = combine(alpha, s1, beta, ci[1]);
      ci[2] = combine(alpha, s2, beta, ci[2]);
      ci[3] = combine(alpha, s3, beta, ci[3]);
    }
  }
  for (; n < n1; ++n) {
    const T* bn = b + n * ldb;
    for (int64_t i = 0; i < m; ++i) {
      const T* ai = a + i * lda;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t p = 0; p < k; ++p) s += ai[p] * bn[p];
      c[i * ldc + n] = combine(alpha, s, beta, c[i * ldc + n]);
    }
  }
}

// C[:, n0:n1] = alpha * A B + beta * C for A [m,K] (m <= kSmallGemmMaxRows) and
// a row-major B [K,N]: rows of B scaled by A and summed, a block of columns at
// a time. The rows count is a template parameter so that the accumulators
// (M x kCols values: 8-16 vector registers) stay in registers and give enough
// independent FMA chains to hide their latency; no horizontal sums are needed.
template <int M, typename T>
void axpy_rows_fixed(int64_t n0, int64_t n1, int64_t k, T alpha, const T* a, int64_t lda,
                     const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  constexpr int64_t kCols = (M <= 2 ? 256 : (M <= 4 ? 128 : 64)) / sizeof(T) * 2;
  for (int64_t j0 = n0; j0 < n1; j0 += kCols) {
    const int64_t cols = std::min(kCols, n1 - j0);
    T acc[M][kCols] = {};
    if (cols == kCols) {
      for (int64_t p = 0; p < k; ++p) {
        const T* bp = b + p * ldb + j0;
        for (int i = 0; i < M; ++i) {
          const T scale = a[i * lda + p];
#pragma omp simd
          for (int64_t j = 0; j < kCols; ++j) acc[i][j] += scale * bp[j];
        }
      }
    } else {
      for (int64_t p = 0; p < k; ++p) {
        const T* bp = b + p * ldb + j0;
        for (int i = 0; i < M; ++i) {
          const T scale = a[i * lda + p];
#pragma omp simd
          for (int64_t j = 0; j < cols; ++j) acc[i][j] += scale * bp[j];
        }
      }
    }
    for (int i = 0; i < M; ++i) {
      T* ci = c + i * ldc + j0;
      for (int64_t j = 0; j < cols; ++j) ci[j] = combine(alpha, acc[i][j], beta, ci[j]);
    }
  }
}

template <typename T>
void axpy_rows(int64_t m, int64_t n0, int64_t n1, int64_t k, T alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  // Up to 8 rows, as one or two calls with a compile-time row count.
  while (m > 0) {
    const int64_t rows = m >= 8 ? 8 : (m >= 4 ? 4 : (m >= 2 ? 2 : 1));
    switch (rows) {
      case 8: axpy_rows_fixed<8>(n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
      case 4: axpy_rows_fixed<4>(n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
      case 2: axpy_rows_fixed<2>(n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
      default: axpy_rows_fixed<1>(n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
    }
    a += rows * lda;
    c += rows * ldc;
    m -= rows;
  }
}

// Products below this many multiply-adds run on one thread.
constexpr int64_t kSmallGemmParallelWork = 64 * 1024;

// Row-major C[M,N] = alpha * A[M,K] op(B) + beta * C with M <= kSmallGemmMaxRows,
// op(B) = B^T for a [N,K] B (trans_b) or B for a [K,N] B. beta == 0 ignores C.
// Equal contiguous column ranges per thread, the same at every call.
template <typename T>
void small_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const int64_t threads = m * n * k < kSmallGemmParallelWork ? 1 : at::get_num_threads();
  const int64_t grain = std::max<int64_t>(16, (n + threads - 1) / threads);
  at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
    if (trans_b) {
      dot_rows(m, n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      axpy_rows(m, n0, n1, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
  });
}

// Rows [m0, m1) of C = alpha * A^T B + beta * C with a compile-time K, so that
// the K products of an output vector unroll into one FMA chain.
template <int K, typename T>
void rank_update_rows(int64_t m0, int64_t m1, int64_t n, T alpha, const T* a, int64_t lda,
                      const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t i = m0; i < m1; ++i) {
    T scale[K];
    for (int p = 0; p < K; ++p) scale[p] = alpha * a[p * lda + i];
    T* ci = c + i * ldc;
    if (beta == T(0)) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        T acc = scale[0] * b[j];
        for (int p = 1; p < K; ++p) acc += scale[p] * b[p * ldb + j];
        ci[j] = acc;
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        T acc = beta * ci[j];
        for (int p = 0; p < K; ++p) acc += scale[p] * b[p * ldb + j];
        ci[j] = acc;
      }
    }
  }
}

// Products writing fewer elements than this run on one thread.
constexpr int64_t kRankUpdateParallelOutputs = 256 * 1024;

// Row-major C[M,N] = alpha * A^T B + beta * C for A [K,M] and B [K,N] with
// 1 <= K <= kSmallGemmMaxRows: the weight gradient of a step of a few rows
// (dgates^T x). Each row of C is a sum of K rows of B, written once; the
// packed GEMM would pack and tile for an inner dimension of 1-8.
template <typename T>
void rank_update(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                 int64_t ldb, T beta, T* c, int64_t ldc) {
  const int64_t threads = m * n < kRankUpdateParallelOutputs ? 1 : at::get_num_threads();
  const int64_t grain = std::max<int64_t>(8, (m + threads - 1) / threads);
  at::parallel_for(0, m, grain, [&](int64_t m0, int64_t m1) {
    switch (k) {
#define RK_RANK_CASE(K) \
  case K:               \
    return rank_update_rows<K>(m0, m1, n, alpha, a, lda, b, ldb, beta, c, ldc);
      RK_RANK_CASE(1)
      RK_RANK_CASE(2)
      RK_RANK_CASE(3)
      RK_RANK_CASE(4)
      RK_RANK_CASE(5)
      RK_RANK_CASE(6)
      RK_RANK_CASE(7)
      RK_RANK_CASE(8)
#undef RK_RANK_CASE
      default:
        TORCH_CHECK(false, "rnnkern: rank_update takes 1-8 rows, got ", k);
    }
  });
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
