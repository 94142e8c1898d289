// The per-step GEMM of the CPU backend.
//
// Called twice per time step, so it must not go through the dispatcher
// (about 2 us a call) or allocate tensors. torch's CPU libraries export the
// Fortran BLAS entry points (sgemm_/dgemm_ from MKL or OpenBLAS); they are
// looked up once at run time. If a torch build has none, ATen's addmm on
// wrapping tensors is the (slower, still correct) fallback.
#include "blas.h"
#include "packed_gemm.h"
#include "small_gemm.h"

#include <dlfcn.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>

namespace rnnkern {
namespace cpu {
namespace {

// The packed B operands of the innermost open PackedWeightScope of this thread.
using PackKey = std::tuple<const void*, bool, int64_t, int64_t, int64_t>;  // b, trans, k, n, ldb
struct PackCache {
  bool enabled;
  std::map<PackKey, PackedPanels> panels;
};
thread_local std::vector<std::unique_ptr<PackCache>> open_scopes;

// Fewer rows than this: small_gemm or BLAS.
constexpr int64_t kPackedMinRows = kSmallGemmMaxRows + 1;

bool try_packed_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                     float* c, int64_t ldc) {
  if (open_scopes.empty() || !open_scopes.back()->enabled || ta || alpha != 1.f ||
      m < kPackedMinRows || n < kPanelCols) {
    return false;
  }
  auto& cache = open_scopes.back()->panels;
  const PackKey key{b, tb, k, n, ldb};
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, pack_panels(b, ldb, tb, k, n)).first;
  packed_gemm(m, a, lda, it->second, beta, c, ldc);
  return true;
}

template <typename T>
using FortranGemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                             const T*, const T*, const int*, const T*, const int*, const T*, T*,
                             const int*);

template <typename T>
FortranGemm<T> find_blas() {
  static const FortranGemm<T> fn = reinterpret_cast<FortranGemm<T>>(
      dlsym(RTLD_DEFAULT, std::is_same<T, float>::value ? "sgemm_" : "dgemm_"));
  return fn;
}

template <typename T>
void aten_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<T*>(p), {trans ? cols : rows, trans ? rows : cols},
                             {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  at::addmm_out(out, out, view(a, m, k, lda, ta), view(b, k, n, ldb, tb), static_cast<double>(beta),
                static_cast<double>(alpha));
}

template <typename T>
void gemm_impl(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS rejects k = 0 leading dimensions; C = beta * C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  if (!ta && m <= kSmallGemmMaxRows) {
    small_gemm(tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if constexpr (std::is_same<T, float>::value) {
    if (try_packed_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  }
  const int64_t int_max = std::numeric_limits<int>::max();
  const FortranGemm<T> blas = find_blas<T>();
  if (blas == nullptr || std::max({m, n, k, lda, ldb, ldc}) > int_max) {
    aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  const char op_a = ta ? 'T' : 'N';
  const char op_b = tb ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb),
            ildc = static_cast<int>(ldc);
  blas(&op_b, &op_a, &in, &im, &ik, &alpha, b, &ildb, a, &ilda, &beta, c, &ildc);
}

}  // namespace

PackedWeightScope::PackedWeightScope(bool enabled) {
  open_scopes.push_back(std::make_unique<PackCache>(PackCache{enabled, {}}));
}
PackedWeightScope::~PackedWeightScope() { open_scopes.pop_back(); }

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, c10::BFloat16 alpha,
          const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
          c10::BFloat16 beta, c10::BFloat16* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, c10::Half alpha, const c10::Half* a,
          int64_t lda, const c10::Half* b, int64_t ldb, c10::Half beta, c10::Half* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace cpu
}  // namespace rnnkern
