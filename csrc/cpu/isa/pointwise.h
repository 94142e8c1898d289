// The fused pointwise steps on the CPU: step_elements.h over every (row,
// column), vectorised along the hidden dimension (`omp simd`; fast_math.h is
// written to vectorise) and split over threads when a step has enough work.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

// Elements of one step below which threads cost more than they save.
constexpr int64_t kElemsPerTask = 2048;

// Runs fn(row, col_begin, col_end) over rows x [0, cols) in column blocks.
template <typename F>
void for_each_block(int64_t rows, int64_t cols, const F& fn) {
  constexpr int64_t kBlock = 512;
  const int64_t block = std::min(cols, kBlock);
  if (rows == 0 || block == 0) return;
  const int64_t blocks_per_row = (cols + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, kElemsPerTask / block);
  at::parallel_for(0, rows * blocks_per_row, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / blocks_per_row;
      const int64_t j0 = (task % blocks_per_row) * block;
      fn(row, j0, std::min(cols, j0 + block));
    }
  });
}

template <typename T>
void forward_step(const ForwardStep<T>& step) {
  dispatch_mode(step.mode, [&](auto mode) {
    const ForwardStep<T> s = step;  // a local copy: its fields are loop invariants
    for_each_block(s.rows, s.hidden, [&](int64_t b, int64_t j0, int64_t j1) {
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) forward_element<decltype(mode)::value>(s, b, j);
    });
  });
}

template <typename T>
void backward_step(const BackwardStep<T>& step) {
  dispatch_mode(step.mode, [&](auto mode) {
    const BackwardStep<T> s = step;
    for_each_block(s.rows, s.hidden, [&](int64_t b, int64_t j0, int64_t j1) {
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) backward_element<decltype(mode)::value>(s, b, j);
    });
  });
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
