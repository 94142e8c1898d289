#include "packed_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace rnnkern {
namespace cpu {
namespace {

constexpr int64_t kRows = 8;

// out[MR x 32] = A[MR x K] * panel[K x 32], into a local block.
template <int MR>
void block_kernel(int64_t k, const float* a, int64_t lda, const float* panel,
                  float out[kRows][kPanelCols]) {
#if defined(__AVX512F__)
  __m512 lo[MR], hi[MR];
  for (int i = 0; i < MR; ++i) lo[i] = hi[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_loadu_ps(panel + p * kPanelCols);
    const __m512 b1 = _mm512_loadu_ps(panel + p * kPanelCols + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * lda + p]);
      lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
      hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_ps(out[i], lo[i]);
    _mm512_storeu_ps(out[i] + 16, hi[i]);
  }
#else
  // Portable fallback: the same blocking, left to the compiler's vectoriser.
  for (int i = 0; i < MR; ++i) std::fill(out[i], out[i] + kPanelCols, 0.f);
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = panel + p * kPanelCols;
    for (int i = 0; i < MR; ++i) {
      const float ai = a[i * lda + p];
#pragma omp simd
      for (int64_t j = 0; j < kPanelCols; ++j) out[i][j] += ai * bp[j];
    }
  }
#endif
}

void panel_rows(int64_t m, const float* a, int64_t lda, const float* panel, int64_t k,
                int64_t cols, float beta, float* c, int64_t ldc) {
  float out[kRows][kPanelCols];
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const int64_t rows = std::min(kRows, m - i0);
    const float* ai = a + i0 * lda;
    switch (rows) {
      case 8: block_kernel<8>(k, ai, lda, panel, out); break;
      case 7: block_kernel<7>(k, ai, lda, panel, out); break;
      case 6: block_kernel<6>(k, ai, lda, panel, out); break;
      case 5: block_kernel<5>(k, ai, lda, panel, out); break;
      case 4: block_kernel<4>(k, ai, lda, panel, out); break;
      case 3: block_kernel<3>(k, ai, lda, panel, out); break;
      case 2: block_kernel<2>(k, ai, lda, panel, out); break;
      default: block_kernel<1>(k, ai, lda, panel, out); break;
    }
    for (int64_t i = 0; i < rows; ++i) {
      float* ci = c + (i0 + i) * ldc;
      if (beta == 0.f) {
        std::memcpy(ci, out[i], cols * sizeof(float));
      } else {
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) ci[j] = out[i][j] + beta * ci[j];
      }
    }
  }
}

}  // namespace

PackedPanels pack_panels(const float* b, int64_t ldb, bool trans_b, int64_t k, int64_t n) {
  PackedPanels packed;
  packed.k = k;
  packed.n = n;
  const int64_t panels = (n + kPanelCols - 1) / kPanelCols;
  packed.data.assign(panels * k * kPanelCols, 0.f);
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      float* panel = packed.data.data() + j * k * kPanelCols;
      const int64_t n0 = j * kPanelCols;
      const int64_t cols = std::min(kPanelCols, n - n0);
      if (trans_b) {  // B^T rows are B's columns: gather them
        for (int64_t c = 0; c < cols; ++c) {
          const float* src = b + (n0 + c) * ldb;
          for (int64_t p = 0; p < k; ++p) panel[p * kPanelCols + c] = src[p];
        }
      } else {
        for (int64_t p = 0; p < k; ++p) {
          std::memcpy(panel + p * kPanelCols, b + p * ldb + n0, cols * sizeof(float));
        }
      }
    }
  });
  return packed;
}

void packed_gemm(int64_t m, const float* a, int64_t lda, const PackedPanels& b, float beta,
                 float* c, int64_t ldc) {
  const int64_t panels = (b.n + kPanelCols - 1) / kPanelCols;
  // Fixed contiguous panel ranges per thread: each keeps its share of B cached.
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t n0 = j * kPanelCols;
      panel_rows(m, a, lda, b.data.data() + j * b.k * kPanelCols, b.k,
                 std::min(kPanelCols, b.n - n0), beta, c + n0, ldc);
    }
  });
}

}  // namespace cpu
}  // namespace rnnkern
