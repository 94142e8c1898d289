// The CUDA backend of the driver, and the CUDA kernels of the rnnkern ops.
// Everything runs on the current stream: cuBLAS GEMMs, asynchronous copies and
// the kernels of kernels.h; nothing in the time loop waits for the GPU.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../core/bidirectional_op.h"
#include "../core/generic_backend.h"
#include "../core/layer_op.h"
#include "kernels.h"
#include "launch_config.h"

#include <algorithm>
#include <limits>
#include <type_traits>

namespace rnnkern {
namespace cuda {
namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

// Column-major cuBLAS GEMMs on torch's handle for the current stream (which
// also carries torch's TF32 setting). Half and bfloat16 accumulate in float.
void cublas_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  TORCH_CUDABLAS_CHECK(cublasSgemm(at::cuda::getCurrentCUDABlasHandle(), ta, tb, m, n, k, &alpha,
                                   a, lda, b, ldb, &beta, c, ldc));
}
void cublas_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double alpha,
                 const double* a, int lda, const double* b, int ldb, double beta, double* c,
                 int ldc) {
  TORCH_CUDABLAS_CHECK(cublasDgemm(at::cuda::getCurrentCUDABlasHandle(), ta, tb, m, n, k, &alpha,
                                   a, lda, b, ldb, &beta, c, ldc));
}
template <typename T>
void cublas_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const T* a, int lda, const T* b, int ldb, float beta, T* c, int ldc) {
  static_assert(std::is_same<T, at::Half>::value || std::is_same<T, at::BFloat16>::value,
                "half or bfloat16");
  const cudaDataType type = std::is_same<T, at::Half>::value ? CUDA_R_16F : CUDA_R_16BF;
  TORCH_CUDABLAS_CHECK(cublasGemmEx(at::cuda::getCurrentCUDABlasHandle(), ta, tb, m, n, k, &alpha,
                                    a, type, lda, b, type, ldb, &beta, c, type, ldc,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

struct Backend : GenericLoopBackend {
  struct CallScope {
    CallScope(const at::Tensor& input, const OptTensor&) : guard(input.device()) {}
    c10::cuda::CUDAGuard guard;
  };
  // One algorithm today: per step a cuBLAS GEMM and one fused pointwise
  // kernel. A persistent kernel that keeps W_hh on chip for the whole sequence
  // (one launch, a grid-wide barrier per step) is the planned second one for
  // small batches; it plugs in as forward_sequence / backward_sequence, chosen
  // there per shape.
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  template <typename T>
  static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    const int64_t int_max = std::numeric_limits<int>::max();
    TORCH_CHECK(std::max({m, n, k, lda, ldb, ldc}) <= int_max,
                "rnnkern: a GEMM dimension exceeds cuBLAS's 32-bit limit");
    using A = at::opmath_type<T>;
    const auto op = [](bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; };
    cublas_gemm(op(tb), op(ta), static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                static_cast<A>(alpha), b, static_cast<int>(ldb), a, static_cast<int>(lda),
                static_cast<A>(beta), c, static_cast<int>(ldc));
  }
  template <typename T>
  static void copy(T* dst, const T* src, int64_t n) {
    if (n == 0) return;
    C10_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream()));
  }
  template <typename T>
  static void add(T* dst, const T* a, const T* b, int64_t n) {
    if (n == 0) return;
    const LaunchConfig config;
    add_kernel<T><<<blocks_for(n, config), config.threads, 0, stream()>>>(dst, a, b, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  static void forward_step(const ForwardStep<T>& s) {
    const int64_t n = s.rows * s.hidden;
    if (n == 0) return;
    const LaunchConfig config;
    dispatch_mode(s.mode, [&](auto mode) {
      forward_step_kernel<decltype(mode)::value, T>
          <<<blocks_for(n, config), config.threads, 0, stream()>>>(s);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename T>
  static void backward_step(const BackwardStep<T>& s) {
    const int64_t n = s.rows * s.hidden;
    if (n == 0) return;
    const LaunchConfig config;
    dispatch_mode(s.mode, [&](auto mode) {
      backward_step_kernel<decltype(mode)::value, T>
          <<<blocks_for(n, config), config.threads, 0, stream()>>>(s);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  static at::Tensor column_sum(const at::Tensor& x) {
    const int64_t rows = x.size(0), cols = x.size(1);
    at::Tensor out = at::empty({cols}, x.options());
    if (cols == 0) return out;
    const LaunchConfig config;
    RNNKERN_DISPATCH_TYPES(x.scalar_type(), "rnnkern_column_sum", [&] {
      column_sum_kernel<scalar_t>
          <<<column_sum_blocks(cols, config), dim3(kSumCols, kSumRows), 0, stream()>>>(
              x.data_ptr<scalar_t>(), rows, cols, out.data_ptr<scalar_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
};

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(rnnkern, CUDA, m) {
  m.impl("layer_forward", &layer_forward<cuda::Backend>);
  m.impl("layer_backward", &layer_backward<cuda::Backend>);
  m.impl("layer_backward_data", &layer_backward_data<cuda::Backend>);
  m.impl("layer_forward_bidirectional", &layer_forward_bidirectional<cuda::Backend>);
  m.impl("layer_backward_bidirectional", &layer_backward_bidirectional<cuda::Backend>);
}

}  // namespace rnnkern
