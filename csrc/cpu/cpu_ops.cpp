// The CPU backend of the driver, and the CPU kernels of the rnnkern ops.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <omp.h>
#include <torch/library.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <type_traits>

#include "../core/bidirectional_op.h"
#include "../core/cell_op.h"
#include "../core/layer_backward.h"
#include "../core/layer_op.h"
#include "../core/stack_op.h"
#include "../core/step_elements.h"
#include "blas.h"
#include "kernel_table.h"

namespace rnnkern {
namespace cpu {

// One packing of each weight per op call (see PackedWeightScope), where the
// sequence is long enough for the packed GEMM to win back the packing.
constexpr int64_t kMinStepsToPack = 8;

// Stacked one-direction layers run as a wavefront (isa/wavefront.h) where a
// layer's weights (W_ih and W_hh, floats) are at most this many: there a layer
// gains little from splitting it over a second core.
constexpr int64_t kMaxWavefrontWeights = 64 * 1024;
// Its per-step input products equal the packed GEMM's bitwise (one FMA chain
// over k, then the bias) where that GEMM packs the weight (a packing scope:
// kMinStepsToPack steps), takes more than kSmallGemmMaxRows rows, and runs k in
// one block (kKC: 128 with AVX-512, 256 with AVX2).
constexpr int64_t kMaxWavefrontInput = 128;

// 0: never a wavefront, 1: where it pays (above), 2: wherever it can run (tests).
std::atomic<int64_t> wavefront_policy{1};
std::atomic<int64_t> wavefront_runs{0};  // for the tests: that it ran

int64_t set_wavefront_policy(int64_t policy) {
  TORCH_CHECK(policy >= 0 && policy <= 2, "rnnkern: _stack_wavefront takes 0, 1 or 2");
  return wavefront_policy.exchange(policy);
}

struct Backend {
  struct CallScope {
    CallScope(const Tensor& input, const OptTensor& batch_sizes)
        : packing(steps_of(input, batch_sizes) >= kMinStepsToPack) {}
    static int64_t steps_of(const Tensor& input, const OptTensor& batch_sizes) {
      const Tensor* sizes = defined_or_null(batch_sizes);
      return sizes ? sizes->numel() : (input.dim() == 3 ? input.size(0) : 0);
    }
    PackedWeightScope packing;
  };
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
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) add_element(dst, a, b, i);
  }
  static at::Tensor column_sum(const at::Tensor& x) { return at::sum(x, 0); }
  static void hold(std::initializer_list<at::Tensor>) {}  // loops finish inside the op
  // The two directions of a bidirectional layer at once.
  template <typename F>
  static void both_directions(const F& body) {
    concurrently(body);
  }
  // Each direction's whole backward on its own core.
  template <typename Loop, typename Finish>
  static void both_directions_backward(const Loop& loop, const Finish& finish) {
    concurrently([&](int d) {
      loop(d);
      finish(d);
    });
  }
  // body(0) and body(1) at once, each on one thread (the kernels inside see a
  // parallel region and stay on their thread), with the caller's thread-local
  // state (grad mode, ...); sequential on one thread.
  template <typename F>
  static void concurrently(const F& body) {
    if (at::get_num_threads() < 2 || omp_in_parallel()) {
      body(0);
      body(1);
      return;
    }
    std::exception_ptr errors[2];
    const at::ThreadLocalState state;
#pragma omp parallel num_threads(2)
    {
      const at::ThreadLocalStateGuard guard(state);
      const int tid = omp_get_thread_num(), n = omp_get_num_threads();
      for (int d = tid; d < 2; d += n) {
        try {
          body(d);
        } catch (...) {
          errors[d] = std::current_exception();
        }
      }
    }
    for (const std::exception_ptr& e : errors) {
      if (e) std::rethrow_exception(e);
    }
  }
  static at::Tensor matmul(const at::Tensor& a, bool trans_a, const at::Tensor& b) {
    return cpu::matmul(a, trans_a, b);
  }
  // dims and input_size: those of the layers above the first.
  template <typename T>
  static bool wavefront_applies(const LayerDims& dims, const SeqLayout& seq, int64_t layers,
                                int64_t input_size) {
    const int64_t policy = wavefront_policy.load();
    const int64_t weights = gate_count(dims.mode) * dims.hidden * (dims.out + input_size);
    return std::is_same<T, float>::value && policy > 0 &&
           (policy == 2 || weights <= kMaxWavefrontWeights) && !omp_in_parallel() &&
           layers <= at::get_num_threads() && seq.batch <= kSmallGemmMaxRows &&
           dims.out == dims.hidden && seq.steps >= kMinStepsToPack &&
           seq.rows_total > kSmallGemmMaxRows && input_size <= kMaxWavefrontInput;
  }
  template <typename T>
  static void stack_wavefront(const std::vector<WavefrontLayer<T>>& layers,
                              const SeqLayout& seq) {
    ++wavefront_runs;
    typed<T>(kernels()).small_batch_wavefront(layers.data(), static_cast<int64_t>(layers.size()),
                                              seq);
  }
  template <typename T>
  static void stack_wavefront_backward(const std::vector<WavefrontBackwardLayer<T>>& layers,
                                       const SeqLayout& seq) {
    ++wavefront_runs;
    typed<T>(kernels()).small_batch_wavefront_backward(
        layers.data(), static_cast<int64_t>(layers.size()), seq);
  }
  // x W_ih^T + bias through gemm() (and so through the packed kernel for float).
  static at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih,
                                     const at::Tensor& bias) {
    const int64_t N = x.size(0), I = x.size(1), GH = w_ih.size(0);
    const at::Tensor w = w_ih.contiguous();
    if (x.scalar_type() == at::kFloat) {  // the GEMM adds the bias as it stores
      at::Tensor out = at::empty({N, GH}, x.options());
      const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
      input_gemm(N, GH, I, x.data_ptr<float>(), w.data_ptr<float>(),
                 b.defined() ? b.data_ptr<float>() : nullptr, out.data_ptr<float>());
      return out;
    }
    // clone, not contiguous: a one-row expand is the bias itself, which the GEMM
    // would then overwrite.
    at::Tensor out = bias.defined() ? bias.expand({N, GH}).clone(at::MemoryFormat::Contiguous)
                                    : at::empty({N, GH}, x.options());
    RNNKERN_DISPATCH_TYPES(x.scalar_type(), "rnnkern_input_projection", [&] {
      gemm(false, true, N, GH, I, scalar_t(1), x.data_ptr<scalar_t>(), I, w.data_ptr<scalar_t>(),
           I, scalar_t(bias.defined() ? 1 : 0), out.data_ptr<scalar_t>(), GH);
    });
    return out;
  }
  template <typename T>
  static bool forward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                               const ForwardBuffers<T>& buf) {
    // bfloat16 and half take the generic loop: their GEMMs go through ATen.
    if constexpr (std::is_floating_point<T>::value) {
      return typed<T>(kernels()).small_batch_forward(dims, seq, reverse, buf);
    }
    return false;
  }
  template <typename T>
  static bool backward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                                const BackwardBuffers<T>& buf) {
    if constexpr (std::is_floating_point<T>::value) {
      return typed<T>(kernels()).small_batch_backward(dims, seq, reverse, buf);
    }
    return false;
  }
  template <typename T>
  static void forward_step(const ForwardStep<T>& s) {
    typed<T>(kernels()).forward_step(s);
  }
  template <typename T>
  static void backward_step(const BackwardStep<T>& s) {
    typed<T>(kernels()).backward_step(s);
  }
};

// op(a) op(b) through the backend's GEMM, for tests and benchmarks; with
// pack_b, inside a weight-packing scope, as the time loops call it. `repeats`
// runs it that many times (b packed once).
at::Tensor gemm_op(const at::Tensor& a, const at::Tensor& b, bool trans_a, bool trans_b,
                   bool pack_b, int64_t repeats) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.scalar_type() == b.scalar_type(),
              "rnnkern: _gemm takes two 2-D tensors of one dtype");
  const int64_t m = a.size(trans_a ? 1 : 0), k = a.size(trans_a ? 0 : 1);
  const int64_t n = b.size(trans_b ? 0 : 1);
  TORCH_CHECK(b.size(trans_b ? 1 : 0) == k, "rnnkern: _gemm: inner sizes differ");
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor out = at::empty({m, n}, a.options());
  const PackedWeightScope scope(pack_b);
  for (int64_t r = 0; r < repeats; ++r) RNNKERN_DISPATCH_TYPES(a.scalar_type(), "rnnkern_gemm", [&] {
    gemm(trans_a, trans_b, m, n, k, scalar_t(1), ac.data_ptr<scalar_t>(), ac.size(1),
         bc.data_ptr<scalar_t>(), bc.size(1), scalar_t(0), out.data_ptr<scalar_t>(), n);
  });
  return out;
}

}  // namespace cpu

TORCH_LIBRARY_FRAGMENT(rnnkern, m) {
  m.def("_gemm(Tensor a, Tensor b, bool trans_a, bool trans_b, bool pack_b, int repeats=1) -> Tensor");
  // Stacked one-direction layers at small batch as a wavefront: 0 never, 1 where
  // it pays, 2 wherever it can run; returns the previous setting.
  m.def("_stack_wavefront(int policy) -> int", &cpu::set_wavefront_policy);
  m.def("_stack_wavefront_runs() -> int", [] { return cpu::wavefront_runs.load(); });
}

TORCH_LIBRARY_IMPL(rnnkern, CPU, m) {
  m.impl("_gemm", &cpu::gemm_op);
  m.impl("layer_forward", &layer_forward<cpu::Backend>);
  m.impl("layer_backward", &layer_backward<cpu::Backend>);
  m.impl("layer_backward_data", &layer_backward_data<cpu::Backend>);
  m.impl("layer_forward_bidirectional", &layer_forward_bidirectional<cpu::Backend>);
  m.impl("layer_backward_bidirectional", &layer_backward_bidirectional<cpu::Backend>);
  m.impl("cell_forward", &cell_forward<cpu::Backend>);
  m.impl("cell_forward_train", &cell_forward_train<cpu::Backend>);
  m.impl("cell_backward", &cell_backward<cpu::Backend>);
  m.impl("stack_forward", &stack_forward<cpu::Backend>);
  m.impl("stack_backward", &stack_backward<cpu::Backend>);
}

}  // namespace rnnkern
