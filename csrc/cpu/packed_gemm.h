// A register-blocked float GEMM for the shapes of RNN time loops: a batch of
// rows times a weight matrix that is reused at every step.
//
// The weight is copied once per op call into panels of 32 columns (K rows of 32
// contiguous values); each 8 x 32 block of the output is then accumulated in 16
// vector registers, broadcasting one value of A per row and step of K. MKL,
// which ATen uses on the CPU, takes generic code paths on non-Intel CPUs and
// reached 45-60 % of this kernel's rate at the per-step shapes.
#pragma once

#include <cstdint>
#include <vector>

namespace rnnkern {
namespace cpu {

constexpr int64_t kPanelCols = 32;

struct PackedPanels {
  int64_t k = 0;  // rows of B (the summed dimension)
  int64_t n = 0;  // columns of B
  std::vector<float> data;  // ceil(n / 32) panels of k x 32 values, zero-padded
};

// Packs op(B) for C = A op(B): B is row-major [K,N], or [N,K] with trans_b.
PackedPanels pack_panels(const float* b, int64_t ldb, bool trans_b, int64_t k, int64_t n);

// Row-major C[M,N] = A[M,K] B + beta * C (beta 0 ignores C), threaded over panels.
void packed_gemm(int64_t m, const float* a, int64_t lda, const PackedPanels& b, float beta,
                 float* c, int64_t ldc);

}  // namespace cpu
}  // namespace rnnkern
