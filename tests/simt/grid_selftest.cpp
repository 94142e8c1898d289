// Self-test of what the SIMT emulation offers persistent kernels: warp
// shuffles and votes, co-resident blocks with a grid barrier (grid_sync.h),
// deadlock reports, and the weak memory model. Prints "PASS <id>: ..." /
// "FAIL <id>: ..." per check and exits non-zero if any failed.
#include "../../csrc/simt/simt_emulation.h"
#include "../../csrc/cuda/grid_sync.h"

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using rnnkern::simt::launch;
using rnnkern::simt::launch_cooperative;
using rnnkern::simt::set_schedule_seed;
using rnnkern::simt::set_weak_memory;

int g_failures = 0;

void check(bool ok, const char* id, const std::string& what) {
  std::printf("%s %s: %s\n", ok ? "PASS" : "FAIL", id, what.c_str());
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

// out[t * 8 + i]: the results of every warp op for thread t.
__global__ void warp_ops(int* out) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  int* o = out + t * 8;
  o[0] = __shfl_sync(0xffffffffu, 100 + lane, 5);          // broadcast lane 5
  o[1] = __shfl_xor_sync(0xffffffffu, 100 + lane, 3);      // lane ^ 3
  o[2] = __shfl_down_sync(0xffffffffu, 100 + lane, 4, 8);  // within segments of 8
  o[3] = __shfl_up_sync(0xffffffffu, 100 + lane, 1);
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[5] = __all_sync(0xffffffffu, lane < 40);
  o[6] = __any_sync(0xffffffffu, lane == 31);
  float v = static_cast<float>(lane);
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  o[7] = static_cast<int>(v);  // 0 + 1 + ... + 31
}

int expected_warp_op(int t, int k) {
  const int lane = t % 32;
  switch (k) {
    case 0: return 105;
    case 1: return 100 + (lane ^ 3);
    case 2: return 100 + (lane % 8 + 4 < 8 ? lane + 4 : lane);
    case 3: return 100 + (lane >= 1 ? lane - 1 : lane);
    case 4: return static_cast<int>(0x49249249u);  // lanes 0, 3, 6, ...
    case 5: return 1;
    case 6: return 1;
    default: return 496;
  }
}

__global__ void partial_warp_shuffle(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

// Every block writes its slot for step s, meets the others at a grid barrier,
// then sums all slots of step s: each block must see every other block's
// value of this step.
__global__ void grid_steps(float* slots, float* sums, unsigned* counter, int steps) {
  const unsigned blocks = gridDim.x;
  for (int s = 0; s < steps; ++s) {
    if (threadIdx.x == 0) {
      rnnkern::cuda::exchange_store(&slots[s * blocks + blockIdx.x], float(s * 10 + blockIdx.x));
    }
    rnnkern::cuda::grid_barrier(counter, static_cast<unsigned>(s + 1));
    if (threadIdx.x == 1) {
      float acc = 0.0f;
      for (unsigned b = 0; b < blocks; ++b) acc += rnnkern::cuda::exchange_load(&slots[s * blocks + b]);
      sums[s * blocks + blockIdx.x] = acc;
    }
  }
}

// The same exchange without the release fence before the arrival.
__global__ void grid_steps_no_fence(float* slots, float* sums, unsigned* counter, int steps) {
  const unsigned blocks = gridDim.x;
  for (int s = 0; s < steps; ++s) {
    if (threadIdx.x == 0) {
      rnnkern::cuda::exchange_store(&slots[s * blocks + blockIdx.x], float(s * 10 + blockIdx.x));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      atomicAdd(counter, 1u);
      while (rnnkern::cuda::poll(counter) < (s + 1) * blocks) {
      }
      __threadfence();
    }
    __syncthreads();
    if (threadIdx.x == 1) {
      float acc = 0.0f;
      for (unsigned b = 0; b < blocks; ++b) acc += rnnkern::cuda::exchange_load(&slots[s * blocks + b]);
      sums[s * blocks + blockIdx.x] = acc;
    }
  }
}

template <typename Kernel>
int wrong_sums(Kernel kernel, unsigned blocks, unsigned resident, int steps) {
  std::vector<float> slots(steps * blocks, -1.0f), sums(steps * blocks, 0.0f);
  unsigned counter = 0;
  launch_cooperative(resident, kernel, blocks, 64, 0, slots.data(), sums.data(), &counter, steps);
  int wrong = 0;
  for (int s = 0; s < steps; ++s) {
    const float want = float(blocks * s * 10 + blocks * (blocks - 1) / 2);
    for (unsigned b = 0; b < blocks; ++b) wrong += sums[s * blocks + b] != want;
  }
  return wrong;
}

std::string error_of(void (*run)()) {
  try {
    run();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

int main() {
  const unsigned threads = 64;
  std::vector<int> out(threads * 8, -1);
  launch(warp_ops, 1, threads, 0, out.data());
  int wrong = 0;
  for (unsigned t = 0; t < threads; ++t) {
    for (int k = 0; k < 8; ++k) wrong += out[t * 8 + k] != expected_warp_op(t, k);
  }
  check(wrong == 0, "w1", "shfl idx/xor/down(width 8)/up, ballot/all/any, butterfly sum (" +
                              std::to_string(wrong) + " wrong)");

  const std::string partial = error_of([] {
    std::vector<int> o(32);
    launch(partial_warp_shuffle, 1, 32, 0, o.data());
  });
  check(partial.find("exited") != std::string::npos || partial.find("deadlock") != std::string::npos,
        "w2", "a shuffle that half the warp skips is an error: " + partial);

  set_weak_memory(true);
  int failing_seeds = 0, stale_seeds = 0;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    set_schedule_seed(seed);
    failing_seeds += wrong_sums(grid_steps, 5, 5, 4) != 0;
    stale_seeds += wrong_sums(grid_steps_no_fence, 5, 5, 4) != 0;
  }
  check(failing_seeds == 0, "g1", "grid barrier over 5 co-resident blocks: every block sees "
                                  "every other's value each step, 10 seeds (" +
                                      std::to_string(failing_seeds) + " wrong)");
  check(stale_seeds > 0, "g2", "weak memory: a barrier without the release fence reads stale "
                               "values for " + std::to_string(stale_seeds) + "/10 seeds");

  const std::string oversized = error_of([] { wrong_sums(grid_steps, 5, 3, 2); });
  check(oversized.find("deadlock") != std::string::npos &&
            oversized.find("never started") != std::string::npos,
        "g3", "grid of 5 with 3 co-resident blocks: " + oversized);
  set_weak_memory(false);

  check(wrong_sums(grid_steps, 4, 4, 3) == 0, "g4",
        "the harness works again after a deadlock (sequentially consistent memory)");
  std::printf("%s: %d failed\n", g_failures == 0 ? "OK" : "FAILED", g_failures);
  return g_failures == 0 ? 0 : 1;
}
