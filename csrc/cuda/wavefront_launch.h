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

// Each layer planned for its share of the SMs, with W_ih's rows beside W_hh's;
// not taken where that leaves a smaller tile of rows per pass than a layer
// alone would have (passes of few rows cost more than the launches saved).
template <class Device, typename T>
PersistentPlan plan_wavefront(const LayerDims& dims, const SeqLayout& seq, int64_t layers) {
  PersistentPlan plan = plan_for<Device, T>(false, dims, seq, false, layers, 2);
  if (!plan.use) return plan;
  const PersistentPlan alone = plan_for<Device, T>(false, dims, seq, false);
  if (!barrier_count_fits(seq.steps + layers - 1, plan.blocks * layers) || !alone.use ||
      plan.tile < alone.tile) {
    plan.use = false;
  }
  return plan;
}

// false: not launched (nothing has run).
template <class Device, typename T>
bool persistent_wavefront(const std::vector<WavefrontLayer<T>>& layers, const SeqLayout& seq) {
  const int64_t n = static_cast<int64_t>(layers.size());
  const LayerDims& dims = layers[0].dims;
  const PersistentPlan plan = plan_wavefront<Device, T>(dims, seq, n);
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
  const at::Tensor on_device = to_device<Device>(host);
  const WavefrontArgs<T> args{reinterpret_cast<const WaveLayerArgs<T>*>(on_device.data_ptr()), n,
                              plan.blocks, barrier_counter(scratch)};
  PersistentPlan grid = plan;
  grid.blocks = n * plan.blocks;
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    constexpr Mode M = decltype(mode)::value;
    launched = Device::launch(&persistent_wavefront_kernel<M, T>, grid, args);
  });
  return launched;
}

// The backward's plan: as plan_wavefront's, with W_ih's columns beside W_hh's.
template <class Device, typename T>
PersistentPlan plan_wavefront_backward(const LayerDims& dims, const SeqLayout& seq,
                                       int64_t layers) {
  PersistentPlan plan = plan_for<Device, T>(true, dims, seq, false, layers, 2);
  if (!plan.use) return plan;
  const PersistentPlan alone = plan_for<Device, T>(true, dims, seq, false);
  if (!barrier_count_fits(seq.steps + 2 * (layers - 1), plan.blocks * layers) || !alone.use ||
      plan.tile < alone.tile) {
    plan.use = false;
  }
  return plan;
}

// false: not launched (nothing has run).
template <class Device, typename T>
bool persistent_wavefront_backward(const std::vector<WavefrontBackwardLayer<T>>& layers,
                                   const SeqLayout& seq) {
  const int64_t n = static_cast<int64_t>(layers.size());
  const LayerDims& dims = layers[0].dims;
  const PersistentPlan plan = plan_wavefront_backward<Device, T>(dims, seq, n);
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
  const at::Tensor on_device = to_device<Device>(host);
  const WavefrontBackwardArgs<T> args{
      reinterpret_cast<const WaveBackwardLayerArgs<T>*>(on_device.data_ptr()), n, plan.blocks,
      barrier_counter(scratch)};
  PersistentPlan grid = plan;
  grid.blocks = n * plan.blocks;
  bool launched = false;
  dispatch_mode(dims.mode, [&](auto mode) {
    constexpr Mode M = decltype(mode)::value;
    launched = Device::launch(&persistent_wavefront_backward_kernel<M, T>, grid, args);
  });
  return launched;
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
