// The CPU backend of the driver, and the CPU kernels of the rnnkern ops.
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>

#include "../rnnkern/layer_op.h"
#include "blas.h"
#include "pointwise.h"
#include "small_batch.h"

namespace rnnkern {
namespace cpu {

struct Backend {
  template <typename T>
  static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
    cpu::gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  template <typename T>
  static void copy(T* dst, const T* src, int64_t n) {
    if (n > 0) std::memcpy(dst, src, n * sizeof(T));
  }
  template <typename T>
  static void add(T* dst, const T* a, const T* b, int64_t n) {
    cpu::add(dst, a, b, n);
  }
  static at::Tensor column_sum(const at::Tensor& x) { return at::sum(x, 0); }
  template <typename T>
  static bool forward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                               const ForwardBuffers<T>& buf) {
    // bfloat16 and half take the generic loop: their GEMMs go through ATen.
    if constexpr (std::is_floating_point<T>::value) {
      return buf.w_hr == nullptr && small_batch_forward(dims, seq, reverse, buf);
    }
    return false;
  }
  template <typename T>
  static bool backward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                                const BackwardBuffers<T>& buf) {
    if constexpr (std::is_floating_point<T>::value) {
      return buf.w_hr == nullptr && small_batch_backward(dims, seq, reverse, buf);
    }
    return false;
  }
  template <typename T>
  static void forward_step(const ForwardStep<T>& s) {
    cpu::forward_step(s);
  }
  template <typename T>
  static void backward_step(const BackwardStep<T>& s) {
    cpu::backward_step(s);
  }
};

}  // namespace cpu

TORCH_LIBRARY_IMPL(rnnkern, CPU, m) {
  m.impl("layer_forward", &layer_forward<cpu::Backend>);
  m.impl("layer_backward", &layer_backward<cpu::Backend>);
}

}  // namespace rnnkern
