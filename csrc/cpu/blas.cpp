// The GEMMs of the CPU backend.
//
// Called twice per time step, so they must not go through the dispatcher
// (about 2 us a call) or allocate tensors. float runs on rnnkern's own kernels
// (kernel_table.h: the small-row kernels up to 8 rows, else the packed GEMM),
// which reach this CPU's FMA rate on the RNN shapes where MKL, which ATen uses,
// takes generic paths on AMD CPUs. double (the parity tests' dtype) takes the
// small-row kernels or the BLAS that torch links (sgemm_/dgemm_, looked up once
// at run time); bfloat16 and half go through ATen.
#include "blas.h"

#include <dlfcn.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../core/aten_gemm.h"
#include "kernel_table.h"

namespace rnnkern {
namespace cpu {
namespace {

// The packed B operands of the innermost open PackedWeightScope of this thread.
using PackKey = std::tuple<const void*, bool, int64_t, int64_t, int64_t, int64_t>;
struct PackCache {
  bool enabled;
  std::map<PackKey, AlignedFloats> packed;  // by (b, trans, k, n, ldb, panel_cols)
};
thread_local std::vector<std::unique_ptr<PackCache>> open_scopes;

// op(B) packed for this call's kernels from the open scope (packing it on
// first use), or null where no scope packs.
const float* cached_packing(const KernelTable& kt, const float* b, int64_t ldb, bool tb,
                            int64_t k, int64_t n) {
  if (open_scopes.empty() || !open_scopes.back()->enabled) return nullptr;
  auto& cache = open_scopes.back()->packed;
  const PackKey key{b, tb, k, n, ldb, kt.panel_cols};
  auto it = cache.find(key);
  if (it == cache.end()) {
    AlignedFloats p;
    p.reset(kt.packed_size(k, n));
    kt.pack_b(b, ldb, tb, k, n, p.data);
    it = cache.emplace(key, std::move(p)).first;
  }
  return it->second.data;
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
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
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

// C = beta * C, for k = 0 (which BLAS rejects).
template <typename T>
void scale(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

// Fewer rows than this: a product whose op(B) is not packed already (outside a
// packing scope) goes to BLAS, unless op(B) is a transposed weight of at least
// kMinTransposedToPack elements (x W^T, a cell's step): there packing it costs
// little (transpose.h) and the BLAS torch links was 1.1-1.9x slower than
// packing + our GEMM at 9-63 rows on AMD CPUs, AVX2 and AVX-512 alike.
constexpr int64_t kMinRowsToPackOnce = 64;
constexpr int64_t kMinTransposedToPack = 32 * 1024;
// Floats of C per thread above which op(B) is packed whole (see float_gemm).
constexpr int64_t kMaxStreamedC = 128 * 1024;

// Starts C from the bias row: C = bias + beta C, for the paths that do not
// add it themselves.
void start_from_bias(int64_t m, int64_t n, const float* bias, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.f ? bias[j] : bias[j] + beta * row[j];
  }
}

// C = alpha op(A) op(B) + beta C (+ bias[n] on every row, where not null: the
// packed kernel adds it as it stores C, the other paths start C from it).
void float_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                bool cacheable, const float* bias = nullptr) {
  if (m == 0 || n == 0) return;
  const KernelTable& kt = kernels();
  const bool small_rows = !ta && m <= kSmallGemmMaxRows;
  const bool rank_update = ta && !tb && k <= kSmallGemmMaxRows;  // a weight gradient of a few rows
  const float* packed = small_rows || rank_update || !cacheable || k == 0
                           ? nullptr
                           : cached_packing(kt, b, ldb, tb, k, n);
  // Packing op(B) for one product of few rows costs about as much as the
  // product (a cell's step, a short sequence): BLAS does it in place.
  const bool blas = !small_rows && !rank_update && packed == nullptr && m < kMinRowsToPackOnce &&
                    !(tb && n * k >= kMinTransposedToPack);
  if (bias != nullptr && (small_rows || rank_update || blas || k == 0)) {
    start_from_bias(m, n, bias, beta, c, ldc);
    beta = 1.f;
    bias = nullptr;
  }
  if (k == 0) return scale(m, n, beta, c, ldc);
  if (small_rows) return kt.f32.small_gemm(tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (rank_update) return kt.f32.rank_update(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (blas) return blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  AlignedFloats whole;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (packed == nullptr && k > kt.k_block && m * n / threads > kMaxStreamedC) {
    // Several K blocks and more of C per thread than its L2 keeps (the
    // backward's input gradient: thousands of rows): unpacked, op(B) is
    // packed a K block at a time and each K block sweeps C through memory;
    // packed whole, the kernel runs every K block of a row block of C while
    // that block is in L2.
    whole.reset(kt.packed_size(k, n));
    kt.pack_b(b, ldb, tb, k, n, whole.data);
    packed = whole.data;
  }
  kt.gemm(GemmArgs{m, n, k, a, lda, ta, b, ldb, tb, packed, alpha, beta, c, ldc, bias});
}

}  // namespace

PackedWeightScope::PackedWeightScope(bool enabled) {
  open_scopes.push_back(std::make_unique<PackCache>(PackCache{enabled, {}}));
}
PackedWeightScope::~PackedWeightScope() { open_scopes.pop_back(); }

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  float_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, true);
}

void input_gemm(int64_t m, int64_t n, int64_t k, const float* x, const float* w,
                const float* bias, float* out) {
  float_gemm(false, true, m, n, k, 1.f, x, k, w, k, 0.f, out, n, true, bias);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale(m, n, beta, c, ldc);
  if (!ta && m <= kSmallGemmMaxRows) {
    kernels().f64.small_gemm(tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (ta && !tb && k <= kSmallGemmMaxRows) {
    kernels().f64.rank_update(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  blas_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, c10::BFloat16 alpha,
          const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b, int64_t ldb,
          c10::BFloat16 beta, c10::BFloat16* c, int64_t ldc) {
  aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, c10::Half alpha, const c10::Half* a,
          int64_t lda, const c10::Half* b, int64_t ldb, c10::Half beta, c10::Half* c,
          int64_t ldc) {
  aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

at::Tensor matmul(const at::Tensor& a, bool trans_a, const at::Tensor& b) {
  if (a.scalar_type() != at::kFloat) return at::mm(trans_a ? a.t() : a, b);
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  const int64_t m = trans_a ? ac.size(1) : ac.size(0), k = trans_a ? ac.size(0) : ac.size(1);
  const int64_t n = bc.size(1);
  at::Tensor out = at::empty({m, n}, a.options());
  float_gemm(trans_a, false, m, n, k, 1.f, ac.data_ptr<float>(), ac.size(1), bc.data_ptr<float>(),
             n, 0.f, out.data_ptr<float>(), n, false);
  return out;
}

}  // namespace cpu
}  // namespace rnnkern
