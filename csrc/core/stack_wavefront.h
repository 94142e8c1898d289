// Stacked one-direction layers run at once, each a step behind the one below
// (the backend's stack_wavefront; the CPU's is isa/wavefront.h), for
// stack_op.h's forward, and in backward each a step behind the one above:
// where the backend takes it and how its buffers, dropout and results match
// the layer-by-layer path's.
#pragma once

#include <ATen/ops/empty_like.h>

#include <vector>

#include "stack_args.h"

namespace rnnkern {

// Whether the backend runs this one-direction stack as a wavefront: float,
// layers above the first alike (their input is the layer below's output).
template <class Backend>
bool wavefront_wanted(Mode mode, const Tensor& input, const OptTensor& batch_sizes,
                      const DirectionArgs& weights, const StackShape& s, double dropout) {
  if (s.directions != 1 || s.layers < 2 || input.scalar_type() != at::kFloat || dropout >= 1) {
    return false;
  }
  const Tensor w_hh = weight_arg(weights, 1, 1, "w_hh");
  if (w_hh.dim() != 2 || w_hh.size(0) != gate_count(mode) * w_hh.size(1)) return false;
  const int64_t H = w_hh.size(1);
  for (int64_t l = 0; l < s.layers; ++l) {  // no projection, and the layers above alike
    const Tensor w = weight_arg(weights, l, 1, "w_hh");
    if (optional_weight(weights, l, 4).has_value() || !w.sizes().equals(w_hh.sizes())) {
      return false;
    }
  }
  return Backend::template wavefront_applies<float>(LayerDims{mode, H, H},
                                                    checked_layout(input, batch_sizes),
                                                    s.layers, H);
}

// The wavefront's forward: every layer prepared (the first with its input
// projection, the others with their biases only), the dropout noise drawn up
// front in the layer-by-layer path's order (nothing between two layers draws
// from the generator, so the masks are the same), then all loops at once.
template <class Backend>
StackForwardResult wavefront_forward(int64_t mode, const Tensor& input,
                                     const OptTensor& batch_sizes, const Tensor& hx,
                                     const Tensor* c0, const DirectionArgs& weights,
                                     const StackShape& s, double dropout, bool train) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const bool lstm = checked_mode(mode) == Mode::LSTM;
  std::vector<PreparedForward> layers;
  std::vector<Tensor> w_ih(s.layers), noise(s.layers), dropped(s.layers);
  Tensor layer_input = input;
  for (int64_t l = 0; l < s.layers; ++l) {
    w_ih[l] = weight_arg(weights, l, 0, "w_ih").contiguous();
    layers.push_back(prepare_forward<Backend>(
        mode, layer_input, batch_sizes, hx[l], lstm ? OptTensor((*c0)[l]) : std::nullopt,
        w_ih[l], weight_arg(weights, l, 1, "w_hh"), optional_weight(weights, l, 2),
        optional_weight(weights, l, 3), std::nullopt, train, l == 0));
    layer_input = layers.back().output.view(layers.back().out_shape);
    if (l + 1 < s.layers && dropout > 0) {
      noise[l + 1] = cpu_dropout_noise(layer_input, dropout);
      dropped[l + 1] = at::empty_like(layer_input);
      layer_input = dropped[l + 1];
    }
  }
  std::vector<WavefrontLayer<float>> wave;
  for (int64_t l = 0; l < s.layers; ++l) {
    const PreparedForward& p = layers[l];
    wave.push_back({p.dims, p.buffers<float>(), w_ih[l].data_ptr<float>(), w_ih[l].size(1),
                    l > 0 ? layers[l - 1].output.data_ptr<float>() : nullptr,
                    ptr_or_null<float>(noise[l]), ptr_or_null<float>(dropped[l])});
  }
  Backend::template stack_wavefront<float>(wave, layers[0].seq);

  StackResults results{lstm, train, true, {}, {}, {}, {}};
  for (int64_t l = 0; l < s.layers; ++l) {
    results.add_direction(finish_forward(layers[l]), l == s.layers - 1);
    if (l > 0) results.add_input(dropped[l], noise[l]);
  }
  const PreparedForward& top = layers.back();
  return results.finish(top.output.view(top.out_shape));
}

// The wavefront's backward (where the forward took it): every layer's loop
// buffers, those of the layers below the top with an output gradient that the
// layer above fills step by step (through W_ih and the dropout's noise), all
// loops at once, then each layer's weight and bias gradients (and the first
// layer's input gradient) as after the layer-by-layer path's loops. inputs,
// outputs, noise: each layer's input (after the dropout), output, and the
// dropout's noise of its input (undefined without).
template <class Backend>
std::vector<BackwardResult> wavefront_backward(
    int64_t mode, const OptTensor& batch_sizes, const DirectionArgs& weights,
    const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
    const std::vector<Tensor>& noise, at::TensorList saved, const OptTensor& grad_output,
    const Tensor* g_hy, const Tensor* g_cy, int64_t batch, std::array<bool, 4> output_mask) {
  const int64_t layers = static_cast<int64_t>(inputs.size());
  const typename Backend::CallScope scope(inputs[0], batch_sizes);
  const bool lstm = checked_mode(mode) == Mode::LSTM;
  std::vector<BackwardData> data(layers);
  std::vector<Tensor> w_ih(layers);
  for (int64_t l = layers - 1; l >= 0; --l) {
    const int64_t base = kSavedPerDirection * l;
    w_ih[l] = weight_arg(weights, l, 0, "w_ih").contiguous();
    const OptTensor g_out =
        l == layers - 1 ? grad_output
                        : OptTensor(at::empty_like(outputs[l], at::MemoryFormat::Contiguous));
    data[l] = prepare_backward(mode, inputs[l], batch_sizes, w_ih[l],
                               weight_arg(weights, l, 1, "w_hh"), std::nullopt, outputs[l],
                               saved[base + 1], saved[base + 2], saved[base + 3], g_out,
                               g_hy ? OptTensor((*g_hy)[l]) : std::nullopt,
                               g_cy && lstm ? OptTensor((*g_cy)[l]) : std::nullopt, false, batch);
    TORCH_CHECK(!noise[l].defined() || noise[l].scalar_type() == at::kFloat,
                "rnnkern: stack_backward: the saved dropout noise is not float");
  }
  std::vector<WavefrontBackwardLayer<float>> wave;
  for (int64_t l = 0; l < layers; ++l) {
    wave.push_back({data[l].dims, data[l].buffers<float>(), w_ih[l].data_ptr<float>(),
                    w_ih[l].size(1), ptr_or_null<float>(noise[l]),
                    l > 0 ? data[l - 1].grad_output.data_ptr<float>() : nullptr});
  }
  Backend::template stack_wavefront_backward<float>(wave, data[0].seq);
  std::vector<BackwardResult> results;
  for (int64_t l = 0; l < layers; ++l) {
    const bool has_bias = optional_weight(weights, l, 2).has_value();
    results.push_back(finish_backward<Backend>(
        data[l], inputs[l], w_ih[l],
        {l == 0 && output_mask[0], output_mask[1], output_mask[2], output_mask[3] && has_bias}));
  }
  return results;
}

}  // namespace rnnkern
