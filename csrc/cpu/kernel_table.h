// The CPU kernels compiled once per instruction set (csrc/cpu/isa/), and the
// choice among them made at run time.
//
// Each file under isa/ compiles the same kernel sources with one capability's
// target flags into its own namespace (rnnkern::cpu::isa_<capability>), and hands
// back a KernelTable of pointers to them. kernels() returns the table of the
// best capability this CPU has, or the one RNNKERN_CPU_CAPABILITY asks for
// (default | avx2 | avx512; a capability the CPU lacks is not taken).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <memory>
#include <string>

#include "../core/driver.h"

namespace rnnkern {
namespace cpu {

// GEMMs with at most this many rows (a time step of a small batch) take the
// small-GEMM kernels; more, the packed GEMM.
constexpr int64_t kSmallGemmMaxRows = 8;

// Row-major C[M,N] = alpha * op(A) op(B) + beta * C (beta 0 ignores C), float.
// packed_b, when set, is op(B) already packed by KernelTable::pack_b (b, ldb
// and trans_b are then unused).
struct GemmArgs {
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  bool trans_a;
  const float* b;
  int64_t ldb;
  bool trans_b;
  const float* packed_b;
  float alpha, beta;
  float* c;
  int64_t ldc;
  const float* bias = nullptr;  // [n], added to every row of C, or null
};

// The kernels of one element type T.
template <typename T>
struct TypedKernels {
  void (*forward_step)(const ForwardStep<T>&);
  void (*backward_step)(const BackwardStep<T>&);
  // Float and double only (null otherwise); see small_batch.h and small_gemm.h.
  bool (*small_batch_forward)(const LayerDims&, const SeqLayout&, bool, const ForwardBuffers<T>&);
  bool (*small_batch_backward)(const LayerDims&, const SeqLayout&, bool,
                               const BackwardBuffers<T>&);
  void (*small_gemm)(bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                     int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);
  // C = alpha * A^T B + beta * C with an inner dimension k <= kSmallGemmMaxRows.
  void (*rank_update)(int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                      const T* b, int64_t ldb, T beta, T* c, int64_t ldc);
  // Stacked layers at once (isa/wavefront.h); float only (null otherwise).
  void (*small_batch_wavefront)(const WavefrontLayer<T>* layers, int64_t count,
                                const SeqLayout& seq);
  void (*small_batch_wavefront_backward)(const WavefrontBackwardLayer<T>* layers, int64_t count,
                                         const SeqLayout& seq);
};

struct KernelTable {
  const char* name;  // "default", "avx2", "avx512"
  // The float GEMM: columns per packed panel, the size of op(B) [K,N] packed,
  // packing, and the product.
  int64_t panel_cols;
  int64_t k_block;  // the GEMM's K per block (kKC)
  int64_t (*packed_size)(int64_t k, int64_t n);
  void (*pack_b)(const float* b, int64_t ldb, bool trans_b, int64_t k, int64_t n, float* out);
  void (*gemm)(const GemmArgs&);
  TypedKernels<float> f32;
  TypedKernels<double> f64;
  TypedKernels<c10::BFloat16> bf16;
  TypedKernels<c10::Half> f16;
  // The FMA-throughput and read-bandwidth probes of this capability (isa/probe.h).
  double (*fma_probe)(int64_t iters);
  double (*read_probe)(const float* p, int64_t n, int64_t repeats);
};

template <typename T> const TypedKernels<T>& typed(const KernelTable& t);
template <> inline const TypedKernels<float>& typed(const KernelTable& t) { return t.f32; }
template <> inline const TypedKernels<double>& typed(const KernelTable& t) { return t.f64; }
template <> inline const TypedKernels<c10::BFloat16>& typed(const KernelTable& t) {
  return t.bf16;
}
template <> inline const TypedKernels<c10::Half>& typed(const KernelTable& t) { return t.f16; }

// The table in use.
const KernelTable& kernels();
// The name of the capability in use; set_capability (for tests and benchmarks)
// switches to a capability this CPU has and returns the previous one's name.
std::string capability_name();
std::string set_capability(const std::string& name);

// GFLOP/s of the current capability's FMA probe on `threads` threads at once.
double fma_peak_gflops(int64_t threads);
// GB/s of `threads` threads each reading its own share of `bytes` again and
// again (from the caches it fits in): the bound of a small batch's step.
double read_bandwidth_gbps(int64_t bytes, int64_t threads);

// A float buffer whose data is 64-byte aligned (a cache line; an AVX-512 vector).
struct AlignedFloats {
  std::unique_ptr<float[]> storage;
  float* data = nullptr;
  int64_t size = 0;
  void reset(int64_t count);  // new, uninitialised contents
};

// Per-thread scratch memory (64-byte aligned), reused across calls; slot
// 0..5 (0, 1: the packed GEMM; 2-4: the small-batch loop; 5: its wavefront's
// W_ih). Contents are undefined on return.
float* thread_scratch(int slot, int64_t count);

// One table per capability, defined in isa/<capability>.cpp (null where a
// capability is not built, e.g. on non-x86 machines).
namespace isa_default { const KernelTable* table(); }
namespace isa_avx2 { const KernelTable* table(); }
namespace isa_avx512 { const KernelTable* table(); }

}  // namespace cpu
}  // namespace rnnkern
