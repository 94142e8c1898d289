// The CUDA kernels of the fused steps: device code only, no launches.
//
// Every kernel is a grid-stride loop over the elements of a step, calling the
// per-element code shared with the CPU (step_elements.h), except the bias
// gradient, which is a block reduction in shared memory. The same source
// compiles with nvcc and, for the tests, with g++ through the SIMT emulation
// harness (simt_emulation.h), which is why nothing here includes CUDA-only
// headers and shared memory is declared through RK_SHARED.
#pragma once

#include <cstdint>

#include "../core/step_elements.h"
#include "shared_memory.h"

namespace rnnkern {
namespace cuda {

constexpr int kThreads = 256;

// Index of this thread in a 1-D grid, and the stride of a grid-stride loop;
// 64-bit before multiplying (blockIdx.x * blockDim.x is a 32-bit product).
RK_HD_INLINE int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
RK_HD_INLINE int64_t grid_threads() {
  return static_cast<int64_t>(blockDim.x) * gridDim.x;
}

template <Mode M, typename T>
__global__ void forward_step_kernel(const ForwardStep<T> s) {
  const int64_t n = s.rows * s.hidden;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    forward_element<M>(s, i / s.hidden, i % s.hidden);
  }
}

template <Mode M, typename T>
__global__ void backward_step_kernel(const BackwardStep<T> s) {
  const int64_t n = s.rows * s.hidden;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    backward_element<M>(s, i / s.hidden, i % s.hidden);
  }
}

template <typename T>
__global__ void add_kernel(T* dst, const T* a, const T* b, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) add_element(dst, a, b, i);
}

// out[c] = sum over r of x[r, c] for a row-major [rows, cols] x: the bias
// gradients. Blocks of kSumCols x kSumRows threads; each block walks tiles of
// kSumCols columns (grid-stride over tiles), its threads first summing strided
// rows, then reducing the kSumRows partial sums in shared memory.
constexpr int kSumCols = 32;
constexpr int kSumRows = 8;

template <typename T>
__global__ void column_sum_kernel(const T* x, int64_t rows, int64_t cols, T* out) {
  using A = at::opmath_type<T>;
  RK_SHARED(A, partial, kSumRows * kSumCols);
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  // The loop condition is the same for every thread of a block, so the
  // barriers inside are reached by all of them.
  for (int64_t tile = blockIdx.x; tile * kSumCols < cols; tile += gridDim.x) {
    const int64_t col = tile * kSumCols + tx;
    A acc = A(0);
    if (col < cols) {
      for (int64_t r = ty; r < rows; r += kSumRows) acc += A(x[r * cols + col]);
    }
    partial[ty * kSumCols + tx] = acc;
    __syncthreads();
    for (int stride = kSumRows / 2; stride > 0; stride /= 2) {
      if (ty < stride) partial[ty * kSumCols + tx] += partial[(ty + stride) * kSumCols + tx];
      __syncthreads();
    }
    if (ty == 0 && col < cols) out[col] = T(partial[tx]);
    __syncthreads();  // partial is rewritten by the next tile
  }
}

}  // namespace cuda
}  // namespace rnnkern
