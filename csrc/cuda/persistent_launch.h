// The persistent kernels as the driver's whole-sequence algorithm
// (forward_sequence / backward_sequence in driver.h): plan the grid, allocate
// the barrier counter and scratch, launch. Host code, shared by the CUDA
// backend and the CPU emulation through a Device that supplies
//   enabled(), limits(), max_threads(), options() (TensorOptions of the device),
//   cache_cap() (the most weight chunks a lane keeps in registers: kCacheAll,
//     less in tests of the emulation),
//   launch(kernel, plan, args) -> false when the grid cannot be co-resident
//     (nothing has run then, and the per-step path takes over),
//   launch_pair(pair_kernel, plan, first, second): the same for two groups of
//     plan.blocks blocks, one per direction of a bidirectional layer.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>

#include <cstring>
#include <functional>
#include <initializer_list>
#include <vector>

#include "../core/driver.h"
#include "../core/generic_backend.h"
#include "persistent_backward.h"
#include "persistent_plan.h"

namespace rnnkern {
namespace cuda {

// What every persistent launch needs beside the buffers: the step layout on
// the device (packed only) and a zeroed barrier counter.
struct PersistentScratch {
  at::Tensor layout;   // int64 [2, steps]: sizes, offsets (packed only)
  at::Tensor barrier;  // int32 [1]
  SeqSteps seq;
};

template <class Device>
PersistentScratch persistent_scratch(const SeqLayout& seq, bool reverse) {
  const at::TensorOptions opts = Device::options();
  PersistentScratch s;
  s.barrier = at::zeros({1}, opts.dtype(at::kInt));
  s.seq = SeqSteps{seq.steps, seq.batch, nullptr, nullptr, reverse};
  if (seq.rows_total != seq.steps * seq.batch) {  // packed: sizes decrease somewhere
    at::Tensor host = at::empty({2, seq.steps}, at::TensorOptions().dtype(at::kLong));
    std::memcpy(host.data_ptr<int64_t>(), seq.sizes.data(), seq.steps * sizeof(int64_t));
    std::memcpy(host.data_ptr<int64_t>() + seq.steps, seq.offsets.data(),
                seq.steps * sizeof(int64_t));
    s.layout = host.to(opts.device());
    s.seq.sizes = s.layout.data_ptr<int64_t>();
    s.seq.offsets = s.seq.sizes + seq.steps;
  }
  return s;
}

inline unsigned* barrier_counter(const PersistentScratch& s) {
  return reinterpret_cast<unsigned*>(s.barrier.data_ptr<int>());
}

// The launches of the two directions of a bidirectional layer, forward or
// backward, run as one grid of two block groups (half the SMs each) when both
// fit side by side. The backend opens it around the two directions' loops
// (both_directions; both_directions_backward, whose weight gradients come after
// both loops): the first direction's launch waits here, the second launches
// both, or each alone; whatever still waits runs when the layer closes it.
struct PairedLaunch {
  bool open = false;
  std::function<bool(const void*)> launch_with;  // the waiting first with this second
  std::function<void()> run_alone;               // the first alone, or its per-step loop
  std::vector<at::Tensor> keep;                  // the first's scratch

  bool waiting() const { return static_cast<bool>(run_alone); }
  void reset() {
    launch_with = nullptr;
    run_alone = nullptr;
    keep.clear();
  }
  void run_waiting() {
    if (!waiting()) return;
    const std::function<void()> run = std::move(run_alone);
    const std::vector<at::Tensor> held = std::move(keep);  // alive until it has run
    reset();
    run();
  }
};

inline PairedLaunch& paired_launch() {
  static thread_local PairedLaunch pair;
  return pair;
}

// Backend::hold for the backends that pair: a waiting direction's buffers
// stay allocated until it has been launched.
inline void hold_for_pair(std::initializer_list<at::Tensor> buffers) {
  PairedLaunch& pair = paired_launch();
  if (!pair.waiting()) return;
  for (const at::Tensor& t : buffers) {
    if (t.defined()) pair.keep.push_back(t);
  }
}

class PairedScope {
 public:
  PairedScope() {
    paired_launch().reset();
    paired_launch().open = true;
  }
  // Runs a direction still waiting; not from the destructor, as it may throw.
  void close() {
    paired_launch().open = false;
    paired_launch().run_waiting();
  }
  ~PairedScope() {
    paired_launch().open = false;
    paired_launch().reset();
  }
  PairedScope(const PairedScope&) = delete;
  PairedScope& operator=(const PairedScope&) = delete;
};

// Launches `single` with args, paired with the other direction's launch
// where a PairedScope is open (see PairedLaunch); `steps` runs the generic
// per-step loop instead where a waiting launch is refused in the end.
// keep: the scratch the kernel reads, alive until it has been launched.
template <class Device, typename Args, typename Steps>
bool launch_or_pair(void (*single)(Args), void (*pair_kernel)(Args, Args, int64_t),
                    const PersistentPlan& plan, const Args& args,
                    std::vector<at::Tensor> keep, const Steps& steps) {
  PairedLaunch& pair = paired_launch();
  if (pair.open && !pair.waiting()) {  // the first direction waits for the second
    pair.keep = std::move(keep);
    pair.launch_with = [plan, args, pair_kernel](const void* second) {
      return Device::launch_pair(pair_kernel, plan, args, *static_cast<const Args*>(second));
    };
    pair.run_alone = [plan, args, single, steps] {
      if (!Device::launch(single, plan, args)) steps();
    };
    return true;
  }
  if (pair.open) {  // the second: both at once, else the first alone first
    if (pair.launch_with(&args)) {
      pair.reset();
      return true;
    }
    pair.run_waiting();
  }
  return Device::launch(single, plan, args);
}

template <class Device, typename T>
PersistentPlan plan_for(bool backward, const LayerDims& dims, const SeqLayout& seq,
                        bool projection, int64_t sm_share = 1) {
  if (!Device::enabled() || seq.steps == 0) return {};
  DeviceLimits limits = Device::limits();
  limits.sms = std::max<int64_t>(1, limits.sms / sm_share);
  PersistentPlan plan =
      plan_persistent(backward, dims.mode, dims.hidden, seq.batch, projection, sizeof(T),
                      sizeof(at::opmath_type<T>), limits, Device::max_threads());
  if (plan.use && !barrier_count_fits(seq.steps, plan.blocks)) plan.use = false;
  plan.cache = std::min(plan.cache, Device::cache_cap());
  return plan;
}

// `steps` runs the generic per-step loop of this layer-direction: the
// fallback of a launch that waited for its pair and was then refused.
template <class Device, typename T, typename Steps>
bool persistent_forward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                        const ForwardBuffers<T>& buf, const Steps& steps) {
  const PersistentPlan plan =
      plan_for<Device, T>(false, dims, seq, buf.w_hr != nullptr, paired_launch().open ? 2 : 1);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, reverse);
  const at::Tensor stage = at::empty({seq.batch * dims.hidden},
                                     Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  const PersistentForwardArgs<T> args{scratch.seq,      dims.hidden,      plan.units,
                                      plan.tile,        plan.cache,       buf.w_hh,
                                      buf.bias_hn,      buf.gates,        buf.gates_h,
                                      buf.h,            buf.c,            buf.output,
                                      buf.saved_h_prev, buf.saved_extra,  stage.data_ptr<T>(),
                                      barrier_counter(scratch)};
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    constexpr Mode M = decltype(mode)::value;
    launched = launch_or_pair<Device>(&persistent_forward_kernel<M, T>,
                                      &persistent_forward_pair_kernel<M, T>, plan, args,
                                      {scratch.layout, scratch.barrier, stage}, steps);
  });
  return launched;
}

template <class Device, typename T, typename Steps>
bool persistent_backward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                         const BackwardBuffers<T>& buf, const Steps& steps) {
  const PersistentPlan plan =
      plan_for<Device, T>(true, dims, seq, buf.w_hr != nullptr, paired_launch().open ? 2 : 1);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, reverse);
  const int64_t BGH = seq.batch * gate_count(dims.mode) * dims.hidden;
  const bool gru = dims.mode == Mode::GRU;
  const at::Tensor stage = at::empty({gru ? 2 * BGH : BGH},
                                     Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  T* const staged = stage.data_ptr<T>();
  const PersistentBackwardArgs<T> args{scratch.seq,     dims.hidden,     plan.units,
                                       plan.tile,       plan.cache,      buf.w_hh,
                                       buf.gates,       buf.extra,       buf.h_prev,
                                       buf.output,      buf.grad_output, buf.dh,
                                       buf.dc,          buf.dgates,      buf.dgates_h,
                                       staged,          gru ? staged + BGH : nullptr,
                                       nullptr,         barrier_counter(scratch)};
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    constexpr Mode M = decltype(mode)::value;
    launched = launch_or_pair<Device>(&persistent_backward_kernel<M, T>,
                                      &persistent_backward_pair_kernel<M, T>, plan, args,
                                      {scratch.layout, scratch.barrier, stage}, steps);
  });
  return launched;
}

}  // namespace cuda
}  // namespace rnnkern
