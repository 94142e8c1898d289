// A probe of this capability's arithmetic peak: independent FMA chains (more
// than the FMA latency times the FMA pipes of any current core), nothing else.
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

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
