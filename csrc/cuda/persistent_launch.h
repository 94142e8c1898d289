// The persistent kernels as the driver's whole-sequence algorithm
// (forward_sequence / backward_sequence in driver.h): plan the grid, allocate
// the barrier counter and scratch, launch. Host code, shared by the CUDA
// backend and the CPU emulation through a Device that supplies
//   enabled(), limits(), max_threads(), options() (TensorOptions of the device),
//   launch(kernel, plan, args) -> false when the grid cannot be co-resident
//     (nothing has run then, and the per-step path takes over).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>

#include <cstring>

#include "../core/driver.h"
#include "persistent.h"
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

template <class Device, typename T>
PersistentPlan plan_for(bool backward, const LayerDims& dims, const SeqLayout& seq,
                        bool projection) {
  if (!Device::enabled() || seq.steps == 0) return {};
  PersistentPlan plan =
      plan_persistent(backward, dims.mode, dims.hidden, seq.batch, projection, sizeof(T),
                      sizeof(at::opmath_type<T>), Device::limits(), Device::max_threads());
  if (plan.use && !barrier_count_fits(seq.steps, plan.blocks)) plan.use = false;
  return plan;
}

template <class Device, typename T>
bool persistent_forward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                        const ForwardBuffers<T>& buf) {
  const PersistentPlan plan = plan_for<Device, T>(false, dims, seq, buf.w_hr != nullptr);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, reverse);
  const at::Tensor stage = at::empty({seq.batch * dims.hidden},
                                     Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  const PersistentForwardArgs<T> args{scratch.seq,      dims.hidden,      plan.units,
                                      plan.tile,        buf.w_hh,         buf.bias_hn,
                                      buf.gates,        buf.gates_h,      buf.h,
                                      buf.c,            buf.output,       buf.saved_h_prev,
                                      buf.saved_extra,  stage.data_ptr<T>(),
                                      barrier_counter(scratch)};
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    launched = Device::launch(&persistent_forward_kernel<decltype(mode)::value, T>, plan, args);
  });
  return launched;
}

template <class Device, typename T>
bool persistent_backward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                         const BackwardBuffers<T>& buf) {
  const PersistentPlan plan = plan_for<Device, T>(true, dims, seq, buf.w_hr != nullptr);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, reverse);
  const int64_t GH = gate_count(dims.mode) * dims.hidden;
  const at::Tensor stage =
      at::empty({seq.batch * GH}, Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  const PersistentBackwardArgs<T> args{scratch.seq,     dims.hidden,     plan.units,
                                       plan.tile,       buf.w_hh,        buf.gates,
                                       buf.extra,       buf.h_prev,      buf.output,
                                       buf.grad_output, buf.dh,          buf.dc,
                                       buf.dgates,      buf.dgates_h,    stage.data_ptr<T>(),
                                       barrier_counter(scratch)};
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    launched = Device::launch(&persistent_backward_kernel<decltype(mode)::value, T>, plan, args);
  });
  return launched;
}

}  // namespace cuda
}  // namespace rnnkern
