// Whether a layer runs as a persistent kernel (persistent.h), and with what
// grid: host code only, shared by the CUDA backend (with the device's own
// limits) and the CPU emulation (with a device the tests describe), so the
// heuristic is tested without a GPU.
//
// Tiers, from the shape:
//  * one block when all of W_hh and the tiles fit one block's shared memory:
//    no grid barrier at all, only __syncthreads();
//  * else a grid of up to one block per SM, each holding G*U rows (forward) or
//    U columns (backward) of W_hh for U = ceil(H / SMs) units; one grid barrier
//    per step; needs all blocks co-resident (checked at launch);
//  * else (W_hh does not fit on chip, a projection, a batch beyond
//    max_persistent_batch where streaming W_hh per step is cheaper than
//    broadcasting h to every SM): the per-step path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "onchip_product.h"
#include "persistent_common.h"

namespace rnnkern {
namespace cuda {

struct DeviceLimits {
  const char* name;
  int64_t sms;
  int64_t smem_per_block;  // opt-in maximum of dynamic shared memory per block
  int64_t smem_per_sm;
  int64_t regs_per_sm;
  int64_t threads_per_sm;
  int64_t blocks_per_sm;
};

// From NVIDIA's tuning guides (compute capability 8.0 and 9.0).
constexpr DeviceLimits kA100{"A100", 108, 163 * 1024, 164 * 1024, 65536, 2048, 32};
constexpr DeviceLimits kH100{"H100/H200", 132, 227 * 1024, 228 * 1024, 65536, 2048, 32};

// Above this batch the per-step path's GEMM streams W_hh once for many rows,
// while a persistent kernel broadcasts every row of h to every SM and re-reads
// it from shared memory per group of kRowBlock weight rows. The bounds come
// from the performance model (docs/gpu-performance-model.md): at H = 768 the
// persistent kernel's shared-memory traffic passes the per-step GEMM's cost
// between B = 16 and 64, at H = 256 beyond 64. To be replaced by measurements.
constexpr int64_t kMaxPersistentBatch = 64;
inline int64_t max_persistent_batch(int64_t hidden) {
  return hidden <= 512 ? kMaxPersistentBatch : 16;
}
// Rows of h (or of dgates) staged in shared memory per pass over the weights.
constexpr int64_t kMaxTile = 16;
// No cap on the weights the kernels keep in registers (persistent_common.h).
constexpr int64_t kCacheAll = int64_t{1} << 30;

struct PersistentPlan {
  bool use = false;
  int64_t blocks = 0;
  int64_t units = 0;    // hidden units per block
  int64_t threads = 0;  // per block, a multiple of 32
  int64_t tile = 0;
  int64_t smem_bytes = 0;
  int64_t splits = 0;   // slices of K per row group in the block's product
  int64_t classes = 0;  // and classes of batch blocks (ProductSplit)
  int64_t cache = kCacheAll;  // register cache cap (the kernels' own sizes bound it)
  std::string why;  // the reason when not used
};

// Blocks of one kernel that fit on one SM (what cudaOccupancy... computes):
// registers are allocated per warp in units of 256, and CUDA reserves 1 KiB
// of shared memory per block.
inline int64_t blocks_per_sm(const DeviceLimits& d, int64_t threads, int64_t regs_per_thread,
                             int64_t smem_bytes) {
  const int64_t warps = (threads + 31) / 32;
  const int64_t regs_per_warp = (regs_per_thread * 32 + 255) / 256 * 256;
  int64_t n = std::min(d.blocks_per_sm, d.threads_per_sm / (warps * 32));
  n = std::min(n, d.regs_per_sm / std::max<int64_t>(1, regs_per_warp * warps));
  if (smem_bytes > d.smem_per_block) return 0;
  return std::min(n, d.smem_per_sm / (smem_bytes + 1024));
}

// mode, H, batch B, element and accumulator sizes in bytes; `threads` caps the
// block size (kPersistentThreads on a GPU; fewer in the emulation's tests);
// `operand_sets`: 2 where a block also keeps its units' rows of W_ih (the
// wavefront's layers above the first, input size H).
inline PersistentPlan plan_persistent(bool backward, Mode mode, int64_t hidden, int64_t batch,
                                      bool projection, int64_t elem_bytes, int64_t acc_bytes,
                                      const DeviceLimits& d,
                                      int64_t threads = kPersistentThreads,
                                      int64_t operand_sets = 1) {
  PersistentPlan plan;
  if (projection) {
    plan.why = "proj_size";
    return plan;
  }
  if (batch > max_persistent_batch(hidden)) {
    plan.why = "batch above " + std::to_string(max_persistent_batch(hidden));
    return plan;
  }
  if (hidden < 1 || batch < 1 || d.sms < 1) {
    plan.why = "empty";
    return plan;
  }
  const int64_t G = gate_count(mode);
  const int64_t tile = std::min(batch, kMaxTile);
  plan.threads = std::max<int64_t>(32, std::min<int64_t>(threads, kPersistentThreads) / 32 * 32);
  // 16-bit weights take the tensor-core product (tensor_core.h).
  auto bytes = [&](int64_t units, int64_t t) {
    const int64_t one = SmemLayout(backward, hidden, G, units, t, elem_bytes, acc_bytes,
                                   elem_bytes == 2, plan.threads)
                            .bytes;
    return operand_sets == 1 ? one : operand_sets * SmemLayout::round_up(one, 16);
  };
  int64_t units = hidden;  // one block, if it fits
  if (bytes(units, tile) > d.smem_per_block) units = (hidden + d.sms - 1) / d.sms;
  int64_t t = tile;
  while (t > 1 && bytes(units, t) > d.smem_per_block) t /= 2;
  if (bytes(units, t) > d.smem_per_block) {
    plan.why = "W_hh does not fit in shared memory";
    return plan;
  }
  plan.blocks = (hidden + units - 1) / units;
  // The barrier counter reaches steps * blocks; the host checks steps.
  plan.units = units;
  plan.tile = t;
  plan.smem_bytes = bytes(units, t);
  const ProductSplit split = SmemLayout(backward, hidden, G, units, t, elem_bytes, acc_bytes,
                                        elem_bytes == 2, plan.threads)
                                 .split;
  plan.splits = split.splits;
  plan.classes = split.classes;
  plan.use = true;
  return plan;
}

// A layer of a stack run as one wavefront launch (persistent_wavefront.h):
// planned for its share of the SMs with W_ih beside W_hh (forward: rows;
// backward: columns); not taken where that leaves a smaller tile of rows per
// pass than the layer alone would have (passes of few rows cost more than the
// launches saved).
inline PersistentPlan plan_wavefront_layer(bool backward, Mode mode, int64_t hidden,
                                           int64_t batch, int64_t elem_bytes, int64_t acc_bytes,
                                           const DeviceLimits& d, int64_t layers,
                                           int64_t threads = kPersistentThreads) {
  DeviceLimits share = d;
  share.sms = std::max<int64_t>(1, d.sms / layers);
  PersistentPlan plan = plan_persistent(backward, mode, hidden, batch, false, elem_bytes,
                                        acc_bytes, share, threads, 2);
  const PersistentPlan alone =
      plan_persistent(backward, mode, hidden, batch, false, elem_bytes, acc_bytes, d, threads);
  if (plan.use && (!alone.use || plan.tile < alone.tile)) {
    plan.use = false;
    plan.why = "W_ih beside W_hh would shrink the tile";
  }
  return plan;
}

// The grid barrier's counter is 32-bit: steps * blocks must fit.
inline bool barrier_count_fits(int64_t steps, int64_t blocks) {
  return blocks <= 1 || steps <= (int64_t{1} << 32) / blocks - 1;
}

}  // namespace cuda
}  // namespace rnnkern
