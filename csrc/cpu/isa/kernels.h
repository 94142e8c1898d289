// The kernel sources of one capability and their table. Included by
// isa/<capability>.cpp only, with RK_ISA_NS (the namespace), RK_VEC_BYTES (the
// vector width) and the compiler's target set; see prelude.h for why every
// library header comes before.
#pragma once

#include "vec.h"
#include "transpose.h"

#include "gemm.h"
#include "pointwise.h"
#include "probe.h"
#include "small_gemm.h"
// Use small_gemm.h's kernels.
#include "resident.h"
#include "spin_barrier.h"
#include "small_batch.h"
#include "wavefront.h"

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {

namespace {
template <typename T>
constexpr TypedKernels<T> typed_kernels() {
  if constexpr (std::is_floating_point<T>::value) {
    return {&forward_step<T>, &backward_step<T>, &small_batch_forward<T>,
            &small_batch_backward<T>, &small_gemm<T>, &rank_update<T>,
            std::is_same<T, float>::value ? &small_batch_wavefront<T> : nullptr,
            std::is_same<T, float>::value ? &small_batch_wavefront_backward<T> : nullptr};
  } else {  // bfloat16, half: pointwise steps only (their GEMMs go through ATen)
    return {&forward_step<T>, &backward_step<T>, nullptr, nullptr, nullptr, nullptr, nullptr,
            nullptr};
  }
}
}  // namespace

const KernelTable* table() {
  static const KernelTable t{RK_ISA_NAME,
                             kNR,
                             kKC,
                             &packed_size,
                             &pack_b,
                             &gemm,
                             typed_kernels<float>(),
                             typed_kernels<double>(),
                             typed_kernels<c10::BFloat16>(),
                             typed_kernels<c10::Half>(),
                             &fma_probe,
                             &read_probe};
  return &t;
}

}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
