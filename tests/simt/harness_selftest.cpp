// Self-test of the SIMT emulation harness (csrc/simt/simt_emulation.h).
// Prints one "PASS <id>: ..." / "FAIL <id>: ..." line per check (and "INFO"
// lines for timings) and exits non-zero if any check failed.
#include "../../csrc/simt/simt_emulation.h"
// Kernel headers get RK_SHARED from here; include it as they would.
#include "../../csrc/cuda/shared_memory.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using rnnkern::simt::launch;
using rnnkern::simt::set_schedule_seed;

int g_failures = 0;

void check(bool ok, const char* id, const std::string& what) {
  std::printf("%s %s: %s\n", ok ? "PASS" : "FAIL", id, what.c_str());
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

// ---- kernels ----

__global__ void count_visits(int* __restrict__ visits, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)blockDim.x * gridDim.x) {
    visits[i] += 1;
  }
}

constexpr unsigned kReduceThreads = 256;

// Grid-stride partial sums, then a tree reduction in shared memory; with
// `skip_loop_barrier` the barrier inside the tree loop is missing (a bug).
template <bool skip_loop_barrier>
__global__ void block_sum(const float* __restrict__ in, int64_t n, float* out) {
  RK_SHARED(float, partial, kReduceThreads);
  const unsigned t = threadIdx.x;
  float acc = 0.0f;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + t; i < n;
       i += (int64_t)blockDim.x * gridDim.x) {
    acc += in[i];
  }
  partial[t] = acc;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    if (!skip_loop_barrier) __syncthreads();
  }
  if (t == 0) atomicAdd(out, partial[0]);
}

// Marks every (block, thread) once and checks that threadIdx survives barriers.
__global__ void visit_3d(int* visits, int* errors) {
  const unsigned block_id = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread_id = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned before = block_id * threads + thread_id;
  __syncthreads();
  const unsigned after =
      block_id * threads + (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  atomicAdd(&visits[after], 1);
  if (before != after) atomicAdd(errors, 1);
  __syncthreads();
}

// Block 0 writes every shared slot, later blocks only the first half; every
// thread then reads its own slot.
__global__ void read_shared(float* out_static, double* out_dynamic) {
  RK_SHARED(float, s, 64);
  RK_DYNAMIC_SHARED(double, d);
  const unsigned t = threadIdx.x;
  if (blockIdx.x == 0 || t < blockDim.x / 2) {
    s[t] = 1.0f + t;
    d[t] = 2.0 + t;
  }
  __syncthreads();
  out_static[blockIdx.x * blockDim.x + t] = s[t];
  out_dynamic[blockIdx.x * blockDim.x + t] = d[t];
}

// Records the order in which the threads run their first piece of code.
__global__ void record_order(unsigned* order, unsigned* next) {
  order[atomicAdd(next, 1u)] = threadIdx.x;
}

__global__ void divergent_barrier() {
  if (threadIdx.x % 2 == 0) __syncthreads();
}

int g_live_guards = 0;
struct LiveGuard {
  LiveGuard() { ++g_live_guards; }
  ~LiveGuard() { --g_live_guards; }
};

// Thread 5 throws while the others sit at a barrier; their frames must unwind.
__global__ void throwing_kernel() {
  LiveGuard guard;
  __syncthreads();
  if (threadIdx.x == 5) throw std::out_of_range("thread 5 gave up");
  __syncthreads();
}

__global__ void empty_kernel() {}

__global__ void one_barrier(float* out) {
  RK_SHARED(float, s, 256);
  s[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) *out = s[255];
}

// ---- checks ----

void check_grid_stride() {
  const int64_t n = 1000;  // not a multiple of 128, larger than 3 * 128
  std::vector<int> visits(n, 0);
  launch(count_visits, 3, 128, 0, visits.data(), n);
  int wrong = 0;
  for (int v : visits) wrong += v != 1;
  check(wrong == 0, "a", "grid-stride kernel writes each of " + std::to_string(n) +
                             " elements exactly once (" + std::to_string(wrong) + " wrong)");
}

template <bool skip_loop_barrier>
float run_block_sum(const std::vector<float>& in, unsigned blocks) {
  float out = 0.0f;
  launch(block_sum<skip_loop_barrier>, blocks, kReduceThreads, 0, in.data(),
         (int64_t)in.size(), &out);
  return out;
}

std::vector<float> reduction_input(float* exact) {
  std::vector<float> in(3001);
  double sum = 0.0;
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = (float)(i % 7);  // small integers: every partial sum is exact in float
    sum += in[i];
  }
  *exact = (float)sum;
  return in;
}

void check_reduction_and_indices() {
  float exact = 0.0f;
  const std::vector<float> in = reduction_input(&exact);
  int wrong_seeds = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    set_schedule_seed(seed);
    wrong_seeds += run_block_sum<false>(in, 5) != exact;
  }
  check(wrong_seeds == 0, "b1", "block reduction + atomicAdd over 5 blocks sums to " +
                                    std::to_string(exact) + " for all 20 seeds (" +
                                    std::to_string(wrong_seeds) + " wrong)");

  float acc = 1.5f;
  int iacc = 7;
  const bool returns_old = atomicAdd(&acc, 2.0f) == 1.5f && acc == 3.5f &&
                           atomicAdd(&iacc, -3) == 7 && iacc == 4;
  check(returns_old, "b2", "atomicAdd returns the old value");

  const dim3 shapes[][2] = {{dim3(3, 2), dim3(8, 4)}, {dim3(2, 3, 2), dim3(4, 3, 5)}};
  for (const auto& shape : shapes) {
    const dim3 grid = shape[0], block = shape[1];
    const unsigned total = grid.x * grid.y * grid.z * block.x * block.y * block.z;
    std::vector<int> visits(total, 0);
    int errors = 0;
    launch(visit_3d, grid, block, 0, visits.data(), &errors);
    int wrong = 0;
    for (int v : visits) wrong += v != 1;
    check(wrong == 0 && errors == 0, "b3",
          "grid " + rnnkern::simt::detail::dims_name(grid) + " block " +
              rnnkern::simt::detail::dims_name(block) + ": all " + std::to_string(total) +
              " threads visited once, threadIdx kept across barriers (" +
              std::to_string(wrong) + " wrong, " + std::to_string(errors) + " changed)");
  }
}

void check_missing_barrier() {
  float exact = 0.0f;
  const std::vector<float> in = reduction_input(&exact);
  const int seeds = 20;
  int caught = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    set_schedule_seed((uint64_t)seed);
    caught += run_block_sum<true>(in, 5) != exact;
  }
  check(caught > 0, "c", "missing barrier caught by " + std::to_string(caught) + "/" +
                             std::to_string(seeds) + " seeds");
}

std::vector<unsigned> schedule(uint64_t seed) {
  std::vector<unsigned> order(64);
  unsigned next = 0;
  set_schedule_seed(seed);
  launch(record_order, 1, 64, 0, order.data(), &next);
  return order;
}

void check_schedule() {
  std::vector<unsigned> identity(64);
  for (unsigned i = 0; i < 64; ++i) identity[i] = i;
  const std::vector<unsigned> a = schedule(7), again = schedule(7), b = schedule(8);
  check(a == again && a != b && a != identity && b != identity, "c2",
        "thread order is a seeded random permutation (same seed repeats, other seeds differ)");
}

void check_poison() {
  const unsigned blocks = 2, threads = 64;
  std::vector<float> s(blocks * threads);
  std::vector<double> d(blocks * threads);
  launch(read_shared, blocks, threads, threads * sizeof(double), s.data(), d.data());
  int wrong = 0;
  for (unsigned b = 0; b < blocks; ++b) {
    for (unsigned t = 0; t < threads; ++t) {
      const bool written = b == 0 || t < threads / 2;
      const float sv = s[b * threads + t];
      const double dv = d[b * threads + t];
      wrong += written ? (sv != 1.0f + t || dv != 2.0 + t) : !(std::isnan(sv) && std::isnan(dv));
    }
  }
  check(wrong == 0, "d", "unwritten static and dynamic shared memory reads NaN in block 1 "
                         "after block 0 filled it (" + std::to_string(wrong) + " wrong)");
}

void check_divergent_barrier() {
  std::string message;
  try {
    launch(divergent_barrier, 2, 64, 0);
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  check(message.find("divergent __syncthreads") != std::string::npos, "e",
        "divergent barrier throws std::runtime_error: " + message);
}

void check_errors() {
  std::string message;
  try {
    launch(throwing_kernel, 1, 64, 0);
  } catch (const std::out_of_range& e) {
    message = e.what();
  }
  check(message == "thread 5 gave up" && g_live_guards == 0, "f1",
        "kernel exception rethrown by launch (\"" + message + "\"), " +
            std::to_string(g_live_guards) + " thread frames left un-unwound");

  int rejected = 0;
  const dim3 bad[][2] = {{dim3(1), dim3(1025)}, {dim3(1), dim3(32, 32, 2)}, {dim3(0), dim3(32)}};
  for (const auto& config : bad) {
    try {
      launch(empty_kernel, config[0], config[1], 0);
    } catch (const std::invalid_argument&) {
      ++rejected;
    }
  }
  check(rejected == 3, "f2", "invalid configurations rejected: " + std::to_string(rejected) + "/3");

  // The harness must be usable again after all the failures above.
  std::vector<int> visits(300, 0);
  launch(count_visits, 2, 64, 0, visits.data(), (int64_t)visits.size());
  int wrong = 0;
  for (int v : visits) wrong += v != 1;
  check(wrong == 0, "f3", "launches still work after failed launches");
}

template <typename Launch>
double microseconds_per_launch(int launches, Launch&& run) {
  run();  // warm-up: grows the fiber pool
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < launches; ++i) run();
  const std::chrono::duration<double, std::micro> elapsed =
      std::chrono::steady_clock::now() - start;
  return elapsed.count() / launches;
}

void report_timing() {
  const int launches = 100;
  float out = 0.0f;
  const double barrier_us =
      microseconds_per_launch(launches, [&] { launch(one_barrier, 1, 256, 0, &out); });
  const double empty_us =
      microseconds_per_launch(launches, [&] { launch(empty_kernel, 1, 256, 0); });
  check(out == 255.0f, "g", "256-thread block with one barrier computes the right value");
  std::printf("INFO g: %d launches, 256 threads: %.1f us per launch with one barrier, "
              "%.1f us empty\n", launches, barrier_us, empty_us);
}

}  // namespace

int main() {
  check_grid_stride();
  check_reduction_and_indices();
  check_missing_barrier();
  check_schedule();
  check_poison();
  check_divergent_barrier();
  check_errors();
  report_timing();
  std::printf("%s: %d failed\n", g_failures == 0 ? "OK" : "FAILED", g_failures);
  return g_failures == 0 ? 0 : 1;
}
