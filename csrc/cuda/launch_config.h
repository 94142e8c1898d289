// Grid sizes of the kernel launches, shared by the real CUDA launcher and the
// CPU emulation (which may shrink them to exercise the grid-stride paths).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels.h"

namespace rnnkern {
namespace cuda {

struct LaunchConfig {
  int threads = kThreads;     // per block, 1-D kernels
  int64_t max_blocks = 4096;  // grid-stride loops cover the rest
};

inline int64_t blocks_for(int64_t n, const LaunchConfig& config) {
  const int64_t blocks = (n + config.threads - 1) / config.threads;
  return std::max<int64_t>(1, std::min(blocks, config.max_blocks));
}

inline int64_t column_sum_blocks(int64_t cols, const LaunchConfig& config) {
  return std::max<int64_t>(
      1, std::min<int64_t>((cols + kSumCols - 1) / kSumCols, config.max_blocks));
}

}  // namespace cuda
}  // namespace rnnkern
