// Which compiled kernel table runs: the CPU's best, or a lower one on request.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "kernel_table.h"

namespace rnnkern {
namespace cpu {
namespace {

struct Candidate {
  const char* name;
  const KernelTable* table;  // null where not built
};
constexpr int kCandidates = 3;

// Best first.
const Candidate* candidates() {
  static const Candidate all[kCandidates] = {{"avx512", isa_avx512::table()},
                                             {"avx2", isa_avx2::table()},
                                             {"default", isa_default::table()}};
  return all;
}

bool cpu_supports(const Candidate& c) {
  if (c.table == nullptr) return false;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (std::strcmp(c.name, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  if (std::strcmp(c.name, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
#endif
  return std::strcmp(c.name, "default") == 0;
}

// The best table the CPU supports at or below capability `name` (any, for
// null); null if `name` names no capability.
const KernelTable* best_at_most(const char* name) {
  bool reached = name == nullptr;
  for (int i = 0; i < kCandidates; ++i) {
    const Candidate& c = candidates()[i];
    reached = reached || std::strcmp(name, c.name) == 0;
    if (reached && cpu_supports(c)) return c.table;
  }
  return nullptr;
}

const KernelTable* initial() {
  const char* wanted = std::getenv("RNNKERN_CPU_CAPABILITY");
  if (wanted != nullptr && *wanted != '\0') {
    if (const KernelTable* t = best_at_most(wanted)) return t;
    TORCH_WARN("rnnkern: RNNKERN_CPU_CAPABILITY=", wanted,
               " is not one of default, avx2, avx512; using the CPU's best");
  }
  return best_at_most(nullptr);
}

std::atomic<const KernelTable*>& current() {
  static std::atomic<const KernelTable*> table{initial()};
  return table;
}

}  // namespace

const KernelTable& kernels() { return *current().load(std::memory_order_relaxed); }

std::string capability_name() { return kernels().name; }

std::string set_capability(const std::string& name) {
  const KernelTable* t = best_at_most(name.c_str());
  TORCH_CHECK(t != nullptr, "rnnkern: unknown CPU capability '", name,
              "' (expected default, avx2 or avx512)");
  TORCH_CHECK(std::strcmp(t->name, name.c_str()) == 0, "rnnkern: this CPU does not support ",
              name);
  return current().exchange(t)->name;
}

double fma_peak_gflops(int64_t threads) {
  TORCH_CHECK(threads >= 1, "rnnkern: threads must be positive");
  const KernelTable& kt = kernels();
  double best = 0;
  int64_t iters = 1 << 16;
  for (int rep = 0; rep < 12; ++rep) {  // grow to ~50 ms a run, keep the best run
    double flops = 0;
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += kt.fma_probe(iters);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, flops / seconds * 1e-9);
    if (seconds < 0.05) iters *= 2;
  }
  return best;
}

double read_bandwidth_gbps(int64_t bytes, int64_t threads) {
  TORCH_CHECK(threads >= 1 && bytes >= 1, "rnnkern: threads and bytes must be positive");
  const KernelTable& kt = kernels();
  constexpr int64_t kBlock = 8 * 16;  // read_probe's unit (8 AVX-512 vectors)
  const int64_t per = std::max<int64_t>(kBlock, bytes / 4 / threads / kBlock * kBlock);
  const int64_t repeats = std::max<int64_t>(4, (int64_t{64} << 20) / per);
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) {
    double slowest = 0;
#pragma omp parallel num_threads(threads) reduction(max : slowest)
    {
      float* buf = thread_scratch(3, per);
      std::fill(buf, buf + per, 1.f);
      kt.read_probe(buf, per, 2);  // into this core's caches
#pragma omp barrier
      const auto start = std::chrono::steady_clock::now();
      volatile double sink = kt.read_probe(buf, per, repeats);
      (void)sink;
      slowest = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    best = std::max(best, 4.0 * per * repeats * threads / slowest * 1e-9);
  }
  return best;
}

void AlignedFloats::reset(int64_t count) {
  constexpr int64_t kAlignFloats = 16;
  storage.reset(new float[count + kAlignFloats]);
  const auto misalign = reinterpret_cast<uintptr_t>(storage.get()) % (kAlignFloats * 4);
  data = storage.get() + (misalign == 0 ? 0 : (kAlignFloats * 4 - misalign) / 4);
  size = count;
}

float* thread_scratch(int slot, int64_t count) {
  thread_local AlignedFloats buffers[6];
  AlignedFloats& buf = buffers[slot];
  if (buf.size < count) buf.reset(count);
  return buf.data;
}

}  // namespace cpu

// Informational ops, callable from Python: rnnkern.cpu_capability().
TORCH_LIBRARY_FRAGMENT(rnnkern, m) {
  m.def("cpu_capability() -> str", [] { return cpu::capability_name(); });
  m.def("_set_cpu_capability(str name) -> str",
        [](const std::string& name) { return cpu::set_capability(name); });
  // The FMA peak of the capability in use on `threads` threads, in GFLOP/s.
  m.def("_fma_peak_gflops(int threads) -> float",
        [](int64_t threads) { return cpu::fma_peak_gflops(threads); });
  // GB/s of `threads` threads reading their shares of `bytes` from cache.
  m.def("_read_bandwidth_gbps(int bytes, int threads) -> float",
        [](int64_t bytes, int64_t threads) { return cpu::read_bandwidth_gbps(bytes, threads); });
}

}  // namespace rnnkern
