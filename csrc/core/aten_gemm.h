// Row-major C[M,N] = alpha * op(A) op(B) + beta * C through ATen's addmm on
// tensors wrapping the buffers: correct for every dtype and any size, but a
// dispatcher call each time. The fallback of the CPU GEMM, and the GEMM of the
// CUDA kernels' CPU emulation (where cuBLAS would run on a GPU).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>

namespace rnnkern {

template <typename T>
void aten_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<T*>(p), {trans ? cols : rows, trans ? rows : cols},
                                 {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  at::addmm_out(out, out, view(a, m, k, lda, ta), view(b, k, n, ldb, tb),
                static_cast<double>(beta), static_cast<double>(alpha));
}

}  // namespace rnnkern
