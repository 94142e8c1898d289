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
#include "../core/cell_op.h"
#include "../core/generic_backend.h"
#include "../core/layer_backward.h"
#include "../core/layer_op.h"
#include "../core/stack_op.h"
#include "kernels.h"
#include "launch_config.h"
#include "persistent_backend.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

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

// 1: persistent kernels where the plan allows (the default), 0: the per-step
// path only. RNNKERN_CUDA_PERSISTENT sets it at start; torch.ops.rnnkern.
// _cuda_persistent at run time (benchmarks compare the two).
int& persistent_mode() {
  static int mode = [] {
    const char* env = std::getenv("RNNKERN_CUDA_PERSISTENT");
    return env != nullptr ? std::atoi(env) : 1;
  }();
  return mode;
}

// The persistent kernels' Device (persistent_launch.h): this GPU's limits,
// and a cooperative launch, which CUDA refuses unless every block of the grid
// can be resident at once. Then (or before, when the occupancy says so) the
// per-step path runs instead.
struct PersistentDevice {
  static bool enabled() { return persistent_mode() != 0; }
  static DeviceLimits limits() {
    const cudaDeviceProp* p = at::cuda::getCurrentDeviceProperties();
    return {p->name,
            p->multiProcessorCount,
            static_cast<int64_t>(p->sharedMemPerBlockOptin),
            static_cast<int64_t>(p->sharedMemPerMultiprocessor),
            p->regsPerMultiprocessor,
            p->maxThreadsPerMultiProcessor,
            p->maxBlocksPerMultiProcessor};
  }
  static int64_t max_threads() { return kPersistentThreads; }
  static int64_t cache_cap() { return kCacheAll; }
  static at::TensorOptions options() {
    return at::TensorOptions().device(at::kCUDA, c10::cuda::current_device());
  }
  template <typename Args>
  static bool launch(void (*kernel)(Args), const PersistentPlan& plan, const Args& args) {
    Args copy = args;
    void* params[] = {&copy};
    return cooperative(reinterpret_cast<const void*>(kernel), plan, plan.blocks, params);
  }
  // Both directions' groups of plan.blocks blocks in one grid.
  template <typename Args>
  static bool launch_pair(void (*kernel)(Args, Args, int64_t), const PersistentPlan& plan,
                          const Args& first, const Args& second) {
    Args a = first, b = second;
    int64_t first_blocks = plan.blocks;
    void* params[] = {&a, &b, &first_blocks};
    return cooperative(reinterpret_cast<const void*>(kernel), plan, 2 * plan.blocks, params);
  }
  // Blocks of `kernel` with the plan's block size and shared memory that the
  // device holds at once, by the driver's occupancy calculator.
  static int64_t co_resident_blocks(const void* kernel, const PersistentPlan& plan) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(plan.smem_bytes)));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, kernel, static_cast<int>(plan.threads), plan.smem_bytes));
    return static_cast<int64_t>(per_sm) *
           at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  }
  static bool cooperative(const void* kernel, const PersistentPlan& plan, int64_t blocks,
                          void** params) {
    if (!at::cuda::getCurrentDeviceProperties()->cooperativeLaunch ||
        co_resident_blocks(kernel, plan) < blocks) {
      return false;
    }
    const cudaError_t err = cudaLaunchCooperativeKernel(
        kernel, dim3(static_cast<unsigned>(blocks)), dim3(static_cast<unsigned>(plan.threads)),
        params, plan.smem_bytes, stream());
    if (err == cudaErrorCooperativeLaunchTooLarge) {
      (void)cudaGetLastError();  // e.g. SMs taken by other work: nothing ran
      return false;
    }
    C10_CUDA_CHECK(err);
    return true;
  }
};

// Two algorithms: the persistent kernels (persistent.h) where the plan
// (persistent_plan.h) takes the shape, else per step a cuBLAS GEMM and one
// fused pointwise kernel (the generic loop of driver.h).
struct Backend : PersistentBackend<Backend, PersistentDevice> {
  struct CallScope {
    CallScope(const at::Tensor& input, const OptTensor&) : guard(input.device()) {}
    c10::cuda::CUDAGuard guard;
  };
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

int64_t set_persistent(int64_t mode) {
  TORCH_CHECK(mode == 0 || mode == 1, "rnnkern: _cuda_persistent takes 0 or 1");
  return std::exchange(persistent_mode(), static_cast<int>(mode));
}

// Runs `steps` grid barriers and nothing else on `blocks` co-resident blocks
// (the caller times it): the cost of the persistent kernels' synchronisation.
void grid_barrier_run(int64_t blocks, int64_t threads, int64_t steps) {
  TORCH_CHECK(blocks >= 1 && threads >= 32 && threads <= kPersistentThreads && steps >= 0 &&
                  barrier_count_fits(steps, blocks),
              "rnnkern: bad grid barrier benchmark size");
  const at::Tensor counter = at::zeros({1}, PersistentDevice::options().dtype(at::kInt));
  unsigned* c = reinterpret_cast<unsigned*>(counter.data_ptr<int>());
  int s = static_cast<int>(steps);
  void* params[] = {&c, &s};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&barrier_kernel),
                                             dim3(static_cast<unsigned>(blocks)),
                                             dim3(static_cast<unsigned>(threads)), params, 0,
                                             stream()));
}

// The plan for a shape on the current GPU: [used, blocks, units, threads,
// tile, shared memory bytes, co-resident blocks the driver reports, splits of
// K, batch classes].
std::vector<int64_t> persistent_plan_op(bool backward, int64_t mode, int64_t hidden,
                                        int64_t batch, bool projection, at::ScalarType dtype) {
  const int64_t elem = c10::elementSize(dtype), acc = dtype == at::kDouble ? 8 : 4;
  const PersistentPlan p = plan_persistent(backward, checked_mode(mode), hidden, batch,
                                           projection, elem, acc, PersistentDevice::limits());
  int64_t resident = 0;
  if (p.use) {
    RNNKERN_DISPATCH_TYPES(dtype, "rnnkern_persistent_plan", [&] {
      dispatch_mode(checked_mode(mode), [&](auto m) {
        constexpr Mode M = decltype(m)::value;
        const void* kernel = backward
            ? reinterpret_cast<const void*>(&persistent_backward_kernel<M, scalar_t>)
            : reinterpret_cast<const void*>(&persistent_forward_kernel<M, scalar_t>);
        resident = PersistentDevice::co_resident_blocks(kernel, p);
      });
    });
  }
  return {p.use, p.blocks, p.units, p.threads, p.tile, p.smem_bytes, resident, p.splits,
          p.classes};
}

// Whether a float stack of `layers` layers runs as one wavefront launch on
// the current GPU (forward, or its backward loops): [used, blocks per layer].
std::vector<int64_t> wavefront_plan_op(int64_t mode, int64_t hidden, int64_t batch,
                                       int64_t layers, bool backward) {
  TORCH_CHECK(hidden >= 1 && batch >= 1 && layers >= 1, "rnnkern: bad wavefront shape");
  const LayerDims dims{checked_mode(mode), hidden, hidden};
  const SeqLayout seq = SeqLayout::dense(1, batch);
  const PersistentPlan p = plan_wavefront<PersistentDevice, float>(backward, dims, seq, layers);
  return {p.use, p.blocks};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_FRAGMENT(rnnkern, m) {
  // CUDA builds only: the persistent kernels on (1) or off (0); returns the
  // previous setting. And the grid barrier microbenchmark's kernel.
  m.def("_cuda_persistent(int mode) -> int");
  m.def("_cuda_grid_barrier_run(int blocks, int threads, int steps) -> ()");
  m.def(
      "_cuda_persistent_plan(bool backward, int mode, int hidden, int batch, bool projection, "
      "ScalarType dtype) -> int[]");
  m.def(
      "_cuda_wavefront_plan(int mode, int hidden, int batch, int layers, bool backward) "
      "-> int[]");
}

TORCH_LIBRARY_IMPL(rnnkern, CompositeExplicitAutograd, m) {
  m.impl("_cuda_persistent", &cuda::set_persistent);
  m.impl("_cuda_grid_barrier_run", &cuda::grid_barrier_run);
  m.impl("_cuda_persistent_plan", &cuda::persistent_plan_op);
  m.impl("_cuda_wavefront_plan", &cuda::wavefront_plan_op);
}

TORCH_LIBRARY_IMPL(rnnkern, CUDA, m) {
  m.impl("layer_forward", &layer_forward<cuda::Backend>);
  m.impl("layer_backward", &layer_backward<cuda::Backend>);
  m.impl("layer_backward_data", &layer_backward_data<cuda::Backend>);
  m.impl("layer_forward_bidirectional", &layer_forward_bidirectional<cuda::Backend>);
  m.impl("layer_backward_bidirectional", &layer_backward_bidirectional<cuda::Backend>);
  m.impl("cell_forward", &cell_forward<cuda::Backend>);
  m.impl("cell_forward_train", &cell_forward_train<cuda::Backend>);
  m.impl("cell_backward", &cell_backward<cuda::Backend>);
  m.impl("stack_forward", &stack_forward<cuda::Backend>);
  m.impl("stack_backward", &stack_backward<cuda::Backend>);
}

}  // namespace rnnkern
