// The float GEMM: C[M,N] = alpha * op(A) op(B) + beta * C (+ a bias row),
// blocked GotoBLAS-style for this capability's registers and caches. Serves
// every float GEMM of the CPU backend with more than a few rows: the per-step
// recurrent products (op(B) = a weight, packed once per op call), the input
// projection of all steps, and the backward's weight and input gradients
// (K = all the steps' rows).
//
// op(B) is packed into panels of kNR columns (two vectors): a panel is K rows
// of kNR contiguous values, so the micro-kernel reads it as a stream. op(A) is
// packed per block into strips of at most kMaxMR rows, K-major (a transposed A
// row by row of A, each row dealt out to the strips). The micro-kernel keeps
// an MR x kNR block of C in 2 * MR vector registers and broadcasts one value
// of A per row and step of K.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

constexpr int64_t kNR = 2 * kVecFloats;
// 2 * MR accumulators + 2 panel vectors + 1 broadcast fit the register file:
// 32 registers with AVX-512, 16 otherwise.
constexpr int kMaxMR = RK_VEC_BYTES == 64 ? 14 : 6;
// K per block: a panel's kKC x kNR slice (24 KB with AVX-512, 16 KB with AVX2)
// stays in L1 while every strip of the A block passes over it.
constexpr int64_t kKC = RK_VEC_BYTES == 64 ? 128 : 256;
// Rows per packed A block (kMC x kKC floats: ~130-170 KB, in L2).
constexpr int64_t kMC = 168;
// The part of C a row block may have when every K block runs on it in turn.
constexpr int64_t kCBlockBytes = 384 * 1024;
// Panels per block of op(B) packed at a time, when it is not pre-packed.
constexpr int64_t kNCPanels = 32;
// Products below this many multiply-adds run on one thread.
constexpr int64_t kMinParallelWork = 128 * 1024;

int64_t panel_count(int64_t n) { return (n + kNR - 1) / kNR; }

int64_t packed_size(int64_t k, int64_t n) { return panel_count(n) * k * kNR; }

// Rows [k0, k0 + kc) of op(B)'s columns [n0, n0 + cols) into out[kc][kNR],
// zero-padded to kNR columns.
void pack_panel(const float* b, int64_t ldb, bool trans_b, int64_t k0, int64_t kc, int64_t n0,
                int64_t cols, float* out) {
  if (cols < kNR) std::fill(out, out + kc * kNR, 0.f);
  if (trans_b) {  // op(B)'s columns are rows of B
    transpose_into(b + n0 * ldb + k0, ldb, cols, kc, out, kNR);
  } else {
    for (int64_t p = 0; p < kc; ++p) {
      std::memcpy(out + p * kNR, b + (k0 + p) * ldb + n0, cols * sizeof(float));
    }
  }
}

void pack_b(const float* b, int64_t ldb, bool trans_b, int64_t k, int64_t n, float* out) {
  at::parallel_for(0, panel_count(n), 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      pack_panel(b, ldb, trans_b, 0, k, j * kNR, std::min(kNR, n - j * kNR), out + j * k * kNR);
    }
  });
}

// Rows [i0, i0 + rows) and columns [k0, k0 + kc) of A (not transposed) into
// out[kc][rows].
void pack_strip(const GemmArgs& g, int64_t i0, int64_t rows, int64_t k0, int64_t kc, float* out) {
  transpose_into(g.a + i0 * g.lda + k0, g.lda, rows, kc, out, rows);
}

RK_INLINE void store_row(float* row, VecF lo, VecF hi, float alpha, float beta,
                         const float* bias) {
  if (alpha != 1.f) {
    lo = vmul(lo, vset1(alpha));
    hi = vmul(hi, vset1(alpha));
  }
  if (beta != 0.f) {
    lo = vfma(vset1(beta), vload(row), lo);
    hi = vfma(vset1(beta), vload(row + kVecFloats), hi);
  }
  if (bias != nullptr) {
    lo = vadd(lo, vload(bias));
    hi = vadd(hi, vload(bias + kVecFloats));
  }
  vstore(row, lo);
  vstore(row + kVecFloats, hi);
}

// How a micro-kernel stores its block. Passed by reference: as float
// arguments alpha and beta would hold two vector registers through the K loop,
// which the AVX2 kernel (12 accumulators, 2 panel vectors, 1 broadcast of 16)
// needs; it then kept a panel vector on the stack.
struct StoreArgs {
  float alpha, beta;
  const float* bias;  // bias[cols] on every row, or null
};

// C[MR, cols] = alpha * a[kc][MR] b[kc][kNR] + beta * C (+ bias).
template <int MR>
void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                  int64_t cols, const StoreArgs& st) {
  VecF lo[MR], hi[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    lo[i] = hi[i] = vzero();
    // C's rows are far apart (its row stride); fetch them while the K loop runs.
    __builtin_prefetch(c + i * ldc, 1);
    __builtin_prefetch(c + i * ldc + kNR - 1, 1);
  }
  for (int64_t p = 0; p < kc; ++p) {
    const VecF b0 = vload(b);
    const VecF b1 = vload(b + kVecFloats);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const VecF ai = vset1(a[i]);
      lo[i] = vfma(ai, b0, lo[i]);
      hi[i] = vfma(ai, b1, hi[i]);
    }
    a += MR;
    b += kNR;
  }
  const float alpha = st.alpha, beta = st.beta;
  const float* bias = st.bias;
  if (cols == kNR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) store_row(c + i * ldc, lo[i], hi[i], alpha, beta, bias);
    return;
  }
  for (int i = 0; i < MR; ++i) {  // the last, partial panel
    float tmp[kNR];
    vstore(tmp, lo[i]);
    vstore(tmp + kVecFloats, hi[i]);
    float* row = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j) {
      const float v = beta == 0.f ? alpha * tmp[j] : alpha * tmp[j] + beta * row[j];
      row[j] = bias != nullptr ? v + bias[j] : v;
    }
  }
}

using MicroKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t,
                             const StoreArgs&);
template <int... I>
constexpr std::array<MicroKernel, sizeof...(I)> micro_kernels(std::integer_sequence<int, I...>) {
  return {&micro_kernel<I + 1>...};
}
// kMicro[r - 1] handles strips of r rows.
constexpr auto kMicro = micro_kernels(std::make_integer_sequence<int, kMaxMR>{});

// A block of `rows` rows as near-equal strips of at most kMaxMR rows.
struct Strips {
  int64_t count, base, extra;
  explicit Strips(int64_t rows)
      : count((rows + kMaxMR - 1) / kMaxMR), base(rows / count), extra(rows % count) {}
  int64_t rows(int64_t s) const { return base + (s < extra ? 1 : 0); }
  int64_t start(int64_t s) const { return s * base + std::min(s, extra); }
};

// to[0, n) = from[0, n) for n in 1..kMaxMR, as a copy of constant length (a
// few moves; a memcpy call or a loop costs more for so few floats).
constexpr auto kRunLengths = std::make_integer_sequence<int, kMaxMR>{};
template <int... L>
RK_INLINE void copy_run(float* to, const float* from, int64_t n, std::integer_sequence<int, L...>) {
  (void)((n == L + 1 ? (std::memcpy(to, from, (L + 1) * sizeof(float)), true) : false) || ...);
}

// Packs the A block [ic, ic + rows) x [k0, k0 + kc), then runs it against
// panels [j0, j1) of op(B) for that K block.
void block_product(const GemmArgs& g, int64_t ic, int64_t rows_in_block, int64_t k0, int64_t kc,
                   int64_t j0, int64_t j1, const float* b_block, float* a_block) {
  // Later K blocks add to C; the first adds the bias.
  const float beta = k0 == 0 ? g.beta : 1.f;
  const float* bias = k0 == 0 ? g.bias : nullptr;
  const Strips strips(rows_in_block);
  float* a = a_block;
  if (g.trans_a) {
    // op(A)'s rows are columns of A: walk A's rows once, each a contiguous run
    // of the block's columns, and deal it out to the strips. (Strip by strip,
    // every strip would reread the same rows, which lie a row stride apart
    // and, at strides of 4 KB multiples, evict each other from L1.)
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = g.a + (k0 + p) * g.lda + ic;
      float* dst = a_block;
      for (int64_t s = 0; s < strips.count; ++s) {
        const int64_t rows = strips.rows(s);
        copy_run(dst + p * rows, src + strips.start(s), rows, kRunLengths);
        dst += rows * kc;
      }
    }
  } else {
    for (int64_t s = 0; s < strips.count; ++s) {
      pack_strip(g, ic + strips.start(s), strips.rows(s), k0, kc, a);
      a += strips.rows(s) * kc;
    }
  }
  for (int64_t j = j0; j < j1; ++j) {
    const float* panel = b_block != nullptr ? b_block + (j - j0) * kc * kNR
                                            : g.packed_b + (j * g.k + k0) * kNR;
    const int64_t cols = std::min(kNR, g.n - j * kNR);
    const StoreArgs st{g.alpha, beta, bias != nullptr ? bias + j * kNR : nullptr};
    a = a_block;
    for (int64_t s = 0; s < strips.count; ++s) {
      const int64_t rows = strips.rows(s);
      kMicro[rows - 1](kc, a, panel, g.c + (ic + strips.start(s)) * g.ldc + j * kNR, g.ldc, cols,
                       st);
      a += rows * kc;
    }
  }
}

// Rows [m0, m1) x panels [j0, j1) of C, on this thread.
void gemm_tile(const GemmArgs& g, int64_t m0, int64_t m1, int64_t j0, int64_t j1) {
  if (m0 >= m1 || j0 >= j1) return;
  float* a_block = thread_scratch(0, kMC * kKC);
  if (g.packed_b != nullptr && g.k > kKC) {
    // op(B) is packed whole: run every K block of a row block before the next,
    // so that block of C stays in L2 between them instead of streaming all of
    // C through memory once per K block (an input projection: thousands of
    // rows by a weight). The block's rows keep C's part under kCBlockBytes.
    const int64_t cols = (j1 - j0) * kNR;
    const int64_t mc = std::max<int64_t>(
        kMaxMR, std::min<int64_t>(kMC, kCBlockBytes / (4 * cols) / kMaxMR * kMaxMR));
    for (int64_t ic = m0; ic < m1; ic += mc) {
      for (int64_t k0 = 0; k0 < g.k; k0 += kKC) {
        block_product(g, ic, std::min(mc, m1 - ic), k0, std::min(kKC, g.k - k0), j0, j1, nullptr,
                      a_block);
      }
    }
    return;
  }
  float* b_block = g.packed_b != nullptr ? nullptr : thread_scratch(1, kNCPanels * kKC * kNR);
  for (int64_t jc = j0; jc < j1; jc += kNCPanels) {
    const int64_t jn = std::min(j1, jc + kNCPanels);
    for (int64_t k0 = 0; k0 < g.k; k0 += kKC) {
      const int64_t kc = std::min(kKC, g.k - k0);
      if (b_block != nullptr) {
        for (int64_t j = jc; j < jn; ++j) {
          pack_panel(g.b, g.ldb, g.trans_b, k0, kc, j * kNR, std::min(kNR, g.n - j * kNR),
                     b_block + (j - jc) * kc * kNR);
        }
      }
      for (int64_t ic = m0; ic < m1; ic += kMC) {
        block_product(g, ic, std::min(kMC, m1 - ic), k0, kc, jc, jn, b_block, a_block);
      }
    }
  }
}

void gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  const int64_t panels = panel_count(g.n);
  const int64_t threads = at::in_parallel_region() || g.m * g.n * g.k < kMinParallelWork
                              ? 1
                              : std::min<int64_t>(at::get_num_threads(), std::max(g.m, panels));
  // Few rows (a time step's batch): each thread takes fixed columns, so it
  // reads the same part of a weight at every step and keeps it in its cache.
  // Many rows: each thread takes a range of rows and all the columns.
  const bool split_rows = g.m >= 512 || panels < 2 * threads;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (split_rows) {
        const int64_t per = (g.m + threads - 1) / threads;
        const int64_t rows = (per + kMaxMR - 1) / kMaxMR * kMaxMR;
        gemm_tile(g, std::min(g.m, t * rows), std::min(g.m, (t + 1) * rows), 0, panels);
      } else {
        const int64_t per = (panels + threads - 1) / threads;
        gemm_tile(g, 0, g.m, std::min(panels, t * per), std::min(panels, (t + 1) * per));
      }
    }
  });
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
