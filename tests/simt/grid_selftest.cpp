// Self-test of what the SIMT emulation offers persistent kernels: warp
// shuffles and votes, co-resident blocks with a grid barrier (grid_sync.h),
// deadlock reports, and the weak memory model. Prints "PASS <id>: ..." /
// "FAIL <id>: ..." per check and exits non-zero if any failed.
#include "../../csrc/simt/simt_emulation.h"
#include "../../csrc/cuda/grid_sync.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
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
    rnnkern::cuda::grid_barrier(counter, static_cast<unsigned>(s + 1), blocks);
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

// 16-bit encodings of small integers: bfloat16 (a float's upper half) and fp16.
uint32_t bf16_bits(int n) {
  const float v = static_cast<float>(n);
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b >> 16;
}
uint32_t fp16_bits(int n) {
  if (n == 0) return 0;
  const unsigned a = static_cast<unsigned>(n < 0 ? -n : n);
  int e = 0;
  while ((a >> (e + 1)) != 0) ++e;
  return (n < 0 ? 0x8000u : 0u) | static_cast<uint32_t>(e + 15) << 10 | ((a << (10 - e)) & 1023u);
}

// One warp: every lane packs its fragments of A (16x16), B (16x8) and C by
// PTX's m16n8k16 layout and runs the emulated mma; out gets D row-major.
__global__ void mma_kernel(const int* A, const int* B, const float* C, float* out, bool half) {
  const unsigned lane = threadIdx.x, g = lane / 4, q = lane % 4;
  auto enc = [&](int v) { return half ? fp16_bits(v) : bf16_bits(v); };
  auto pair = [&](int lo, int hi) { return enc(lo) | enc(hi) << 16; };
  const uint32_t a[4] = {pair(A[g * 16 + 2 * q], A[g * 16 + 2 * q + 1]),
                         pair(A[(g + 8) * 16 + 2 * q], A[(g + 8) * 16 + 2 * q + 1]),
                         pair(A[g * 16 + 2 * q + 8], A[g * 16 + 2 * q + 9]),
                         pair(A[(g + 8) * 16 + 2 * q + 8], A[(g + 8) * 16 + 2 * q + 9])};
  const uint32_t b[2] = {pair(B[(2 * q) * 8 + g], B[(2 * q + 1) * 8 + g]),
                         pair(B[(2 * q + 8) * 8 + g], B[(2 * q + 9) * 8 + g])};
  float c[4] = {C[g * 8 + 2 * q], C[g * 8 + 2 * q + 1], C[(g + 8) * 8 + 2 * q],
                C[(g + 8) * 8 + 2 * q + 1]};
  rnnkern::simt::mma_16x8x16(a, b, c, half);
  out[g * 8 + 2 * q] = c[0];
  out[g * 8 + 2 * q + 1] = c[1];
  out[(g + 8) * 8 + 2 * q] = c[2];
  out[(g + 8) * 8 + 2 * q + 1] = c[3];
}

int wrong_mma(bool half) {
  std::vector<int> A(256), B(128);
  std::vector<float> C(128), out(128, -1.0f);
  for (int i = 0; i < 256; ++i) A[i] = (i * 7 + 3) % 9 - 4;
  for (int i = 0; i < 128; ++i) B[i] = (i * 5 + 1) % 7 - 3;
  for (int i = 0; i < 128; ++i) C[i] = static_cast<float>(i % 5);
  launch(mma_kernel, 1, 32, 0, A.data(), B.data(), C.data(), out.data(), half);
  int wrong = 0;
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      float d = C[m * 8 + n];
      for (int k = 0; k < 16; ++k) d += static_cast<float>(A[m * 16 + k] * B[k * 8 + n]);
      wrong += out[m * 8 + n] != d;
    }
  }
  return wrong;
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

  const int mma_wrong = wrong_mma(false) + wrong_mma(true);
  check(mma_wrong == 0, "w3", "mma.sync m16n8k16 bf16 and fp16 by PTX's fragment layout (" +
                              std::to_string(mma_wrong) + " of 256 wrong)");

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
