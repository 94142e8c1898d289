// Pieces of the persistent kernels (persistent.h) that are not about one
// cell: their launch bound and register blocks, where a step's rows live, the
// warp sum (the on-chip product and its layout are onchip_product.h's).
// Device code for nvcc and the SIMT emulation.
#pragma once

#include <cstdint>

#include "../core/cell_math.h"
#include "../core/macros.h"
#include "shared_memory.h"

namespace rnnkern {
namespace cuda {

// Upper bound of threads per block of the persistent kernels (their launch
// bound: ptxas then keeps registers x threads within one SM's register file).
constexpr int kPersistentThreads = 256;
// The register block of the on-chip products (onchip_product.h): weight rows
// and rows of h (or of the gate gradients) each warp carries at once.
constexpr int kRowBlock = 4;
constexpr int kBatchBlock = 4;

template <Mode M>
constexpr int gates_of() {
  return M == Mode::LSTM ? 4 : (M == Mode::GRU ? 3 : 1);
}

// The rows of time step t: a dense [steps, batch] sequence when sizes is null,
// else a packed one (device arrays of sizes and row offsets per step).
struct SeqSteps {
  int64_t steps;
  int64_t batch;
  const int64_t* sizes;
  const int64_t* offsets;
  bool reverse;

  RK_HD_INLINE int64_t rows(int64_t t) const { return sizes != nullptr ? sizes[t] : batch; }
  RK_HD_INLINE int64_t offset(int64_t t) const {
    return offsets != nullptr ? offsets[t] : t * batch;
  }
  // The time index of the s-th step in the forward direction of the layer.
  RK_HD_INLINE int64_t forward_time(int64_t s) const { return reverse ? steps - 1 - s : s; }
  // The last step the forward pass runs for row b (it ends there with h_n).
  RK_HD_INLINE int64_t last_time(int64_t b) const {
    if (reverse) return 0;
    if (sizes == nullptr) return steps - 1;
    int64_t lo = 0, hi = steps - 1;  // sizes do not increase: find the last t with sizes[t] > b
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (sizes[mid] > b) lo = mid; else hi = mid - 1;
    }
    return lo;
  }
};

// Sum over the 32 lanes of a warp; every lane gets the total.
template <typename A>
RK_DEVICE_INLINE A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace cuda
}  // namespace rnnkern
