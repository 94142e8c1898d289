// Stacked one-direction layers on the persistent kernels (the backend's
// stack_wavefront, stack_op.h): all layers in one launch as a wavefront
// (persistent_wavefront.h) where every layer's grid fits beside the others
// on its share of the SMs, else layer by layer, each layer's input part of
// the gates one GEMM before its loop. The backward likewise: in one launch
// where it fits, else layer by layer from the top, the gradient of each
// layer's input one GEMM after its loop. Host code, shared by the CUDA
// backend and the CPU emulation (their Device, as in persistent_launch.h).
#pragma once

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mul.h>

#include <cstring>
#include <vector>

#include "persistent_launch.h"
#include "persistent_wavefront.h"

namespace rnnkern {
namespace cuda {

// The layers' arguments as an array in device memory.
template <class Device, typename Args>
at::Tensor to_device(const std::vector<Args>& host) {
  const int64_t bytes = static_cast<int64_t>(host.size() * sizeof(Args));
  at::Tensor staged = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(staged.data_ptr(), host.data(), bytes);
  return staged.to(Device::options().device());
}

// The stack's plan per layer (plan_wavefront_layer) on this Device; a
// wavefront of T steps meets at T + L - 1 barriers (backward: T + 2(L - 1)).
template <class Device, typename T>
PersistentPlan plan_wavefront(bool backward, const LayerDims& dims, const SeqLayout& seq,
                              int64_t layers) {
  if (!Device::enabled() || seq.steps == 0) return {};
  PersistentPlan plan = plan_wavefront_layer(backward, dims.mode, dims.hidden, seq.batch,
                                             sizeof(T), sizeof(at::opmath_type<T>),
                                             Device::limits(), layers, Device::max_threads());
  const int64_t barriers = seq.steps + (backward ? 2 : 1) * (layers - 1);
  if (plan.use && !barrier_count_fits(barriers, plan.blocks * layers)) plan.use = false;
  plan.cache = std::min(plan.cache, Device::cache_cap());
  return plan;
}

// Launches a wavefront kernel (kernel_of(mode) for the stack's mode) on
// n * plan.blocks blocks with the layers' arguments `host`.
template <class Device, typename Layer, typename KernelOf>
bool launch_wavefront(Mode mode, const PersistentPlan& plan, const PersistentScratch& scratch,
                      const std::vector<Layer>& host, const KernelOf& kernel_of) {
  const int64_t n = static_cast<int64_t>(host.size());
  const at::Tensor on_device = to_device<Device>(host);
  const WavefrontArgs<Layer> args{reinterpret_cast<const Layer*>(on_device.data_ptr()), n,
                                  plan.blocks, barrier_counter(scratch)};
  PersistentPlan grid = plan;
  grid.blocks = n * plan.blocks;
  bool launched = false;
  dispatch_mode(mode, [&](auto m) { launched = Device::launch(kernel_of(m), grid, args); });
  return launched;
}

// false: not launched (nothing has run).
template <class Device, typename T>
bool persistent_wavefront(const std::vector<WavefrontLayer<T>>& layers, const SeqLayout& seq) {
  const int64_t n = static_cast<int64_t>(layers.size());
  const LayerDims& dims = layers[0].dims;
  const PersistentPlan plan = plan_wavefront<Device, T>(false, dims, seq, n);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, false);
  const int64_t BH = seq.batch * dims.hidden;
  const at::Tensor stage =
      at::empty({n * BH}, Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  std::vector<WaveLayerArgs<T>> host(n);
  for (int64_t l = 0; l < n; ++l) {
    const WavefrontLayer<T>& w = layers[l];
    const ForwardBuffers<T>& buf = w.buf;
    host[l] = {{scratch.seq, dims.hidden, plan.units, plan.tile, plan.cache, buf.w_hh,
                buf.bias_hn, buf.gates, buf.gates_h, buf.h, buf.c, buf.output, buf.saved_h_prev,
                buf.saved_extra, stage.data_ptr<T>() + l * BH, barrier_counter(scratch)},
               w.w_ih, w.input_size, w.input, w.noise, w.dropped};
  }
  return launch_wavefront<Device>(dims.mode, plan, scratch, host, [](auto mode) {
    return &persistent_wavefront_kernel<decltype(mode)::value, T>;
  });
}

// false: not launched (nothing has run).
template <class Device, typename T>
bool persistent_wavefront_backward(const std::vector<WavefrontBackwardLayer<T>>& layers,
                                   const SeqLayout& seq) {
  const int64_t n = static_cast<int64_t>(layers.size());
  const LayerDims& dims = layers[0].dims;
  const PersistentPlan plan = plan_wavefront<Device, T>(true, dims, seq, n);
  if (!plan.use) return false;
  const PersistentScratch scratch = persistent_scratch<Device>(seq, false);
  const int64_t H = dims.hidden, BGH = seq.batch * gate_count(dims.mode) * H;
  const int64_t per_layer = 2 * BGH + seq.batch * H;  // stage, stage_x, grad_stage
  const at::Tensor stage =
      at::empty({n * per_layer}, Device::options().dtype(c10::CppTypeToScalarType<T>::value));
  std::vector<WaveBackwardLayerArgs<T>> host(n);
  for (int64_t l = 0; l < n; ++l) {
    const WavefrontBackwardLayer<T>& w = layers[l];
    const BackwardBuffers<T>& buf = w.buf;
    T* const staged = stage.data_ptr<T>() + l * per_layer;
    host[l] = {{scratch.seq, H, plan.units, plan.tile, plan.cache, buf.w_hh, buf.gates,
                buf.extra, buf.h_prev, buf.output, buf.grad_output, buf.dh, buf.dc, buf.dgates,
                buf.dgates_h, staged, staged + BGH, l + 1 < n ? staged + 2 * BGH : nullptr,
                barrier_counter(scratch)},
               w.w_ih, w.input_size, w.noise, w.below};
  }
  return launch_wavefront<Device>(dims.mode, plan, scratch, host, [](auto mode) {
    return &persistent_wavefront_backward_kernel<decltype(mode)::value, T>;
  });
}

// out = a * b elementwise, n elements on the device.
template <class Device, typename T>
void multiply(T* out, const T* a, const T* b, int64_t n) {
  const at::TensorOptions opts = Device::options().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor o = at::from_blob(out, {n}, opts);
  at::mul_out(o, at::from_blob(const_cast<T*>(a), {n}, opts),
              at::from_blob(const_cast<T*>(b), {n}, opts));
}

template <class Self, class Device, typename T>
void layers_forward(const std::vector<WavefrontLayer<T>>& layers, const SeqLayout& seq) {
  for (const WavefrontLayer<T>& l : layers) {
    if (l.input != nullptr) {
      const int64_t N = seq.rows_total, I = l.input_size;
      const int64_t GH = gate_count(l.dims.mode) * l.dims.hidden;
      const T* x = l.input;
      if (l.noise != nullptr) {
        multiply<Device>(l.dropped, l.input, l.noise, N * I);
        x = l.dropped;
      }
      Self::gemm(false, true, N, GH, I, T(1), x, I, l.w_ih, I, T(1), l.buf.gates, GH);
    }
    if (!Self::forward_sequence(l.dims, seq, false, l.buf)) {
      forward_steps<Self, T>(l.dims, seq, false, l.buf);
    }
  }
}

template <class Self, class Device, typename T>
void layers_backward(const std::vector<WavefrontBackwardLayer<T>>& layers,
                     const SeqLayout& seq) {
  for (auto l = layers.rbegin(); l != layers.rend(); ++l) {
    if (!Self::backward_sequence(l->dims, seq, false, l->buf)) {
      backward_steps<Self, T>(l->dims, seq, false, l->buf);
    }
    if (l->below == nullptr) continue;
    const int64_t N = seq.rows_total, I = l->input_size;
    const int64_t GH = gate_count(l->dims.mode) * l->dims.hidden;
    Self::gemm(false, false, N, I, GH, T(1), l->buf.dgates, GH, l->w_ih, I, T(0), l->below, I);
    if (l->noise != nullptr) multiply<Device>(l->below, l->below, l->noise, N * I);
  }
}

}  // namespace cuda
}  // namespace rnnkern
