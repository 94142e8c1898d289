// Probes of this capability's arithmetic peak and read bandwidth. The FMA probe: independent FMA chains (more
// runs independent FMA chains (more than the FMA latency times the FMA pipes
// of any current core), nothing else.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

// Runs `iters` steps on the calling thread; returns the floating-point
// operations done (an FMA counts two; without FMA, as on the default path,
// the multiply and the add are issued separately).
double fma_probe(int64_t iters) {
  constexpr int kChains = 12;
  VecF acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = vset1(1e-3f * static_cast<float>(i));
  const VecF scale = vset1(0.999999f), shift = vset1(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = vfma(acc[i], scale, shift);
  }
  float lanes[kVecFloats];
  float sum = 0.f;
  for (int i = 0; i < kChains; ++i) {
    vstore(lanes, acc[i]);
    sum += lanes[0];
  }
  volatile float sink = sum;  // keeps the chains alive
  (void)sink;
  return 2.0 * kChains * kVecFloats * static_cast<double>(iters);
}

// Reads p[0, n) `repeats` times with vector loads (n a multiple of 8 vectors);
// returns a sum so the loads are kept. The cache-bandwidth bound of a small
// batch's step is a sweep like this over W_hh.
double read_probe(const float* p, int64_t n, int64_t repeats) {
  constexpr int kChains = 8;
  VecF acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = vzero();
  for (int64_t r = 0; r < repeats; ++r) {
    for (int64_t i = 0; i + kChains * kVecFloats <= n; i += kChains * kVecFloats) {
#pragma GCC unroll 8
      for (int c = 0; c < kChains; ++c) acc[c] = vadd(acc[c], vload(p + i + c * kVecFloats));
    }
  }
  float lanes[kVecFloats];
  double sum = 0;
  for (int i = 0; i < kChains; ++i) {
    vstore(lanes, acc[i]);
    sum += lanes[0];
  }
  return sum;
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
