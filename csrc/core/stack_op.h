// A module's whole stack in one op call: every layer and direction, and
// torch.nn's dropout between layers, forward and backward. Each layer-direction
// is layer_op.h's; a bidirectional layer's two directions go through
// Backend::both_directions / both_directions_backward (on the CPU one core
// each; on CUDA one grid), as bidirectional_op.h's.
//
// weights: five entries per layer-direction, in torch.nn's order of layers and
// directions: [w_ih, w_hh, b_ih, b_hh, w_hr] (absent ones None).
// saved (forward with train, and backward's input): per layer-direction
// [output, saved_h_prev, saved_gates, saved_extra], then per layer above the
// first [its input, the dropout's noise]. Entries that would repeat another
// tensor are empty, since an op's outputs must not alias: the top layer's
// output of a one-direction stack (it is the op's output), and a layer's input
// when it is the layer below's output unchanged (one direction, no dropout).
// A one-direction stack the backend runs as a wavefront takes
// stack_wavefront.h's forward instead, with the same results, and its backward
// (the same up to the order of sums).
#pragma once

#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>

#include <array>
#include <tuple>
#include <vector>

#include "stack_args.h"
#include "stack_wavefront.h"

namespace rnnkern {

template <class Backend>
StackForwardResult stack_forward(int64_t mode, const Tensor& input, const OptTensor& batch_sizes,
                                 const Tensor& hx, const OptTensor& cx,
                                 const DirectionArgs& weights, int64_t num_layers,
                                 bool bidirectional, double dropout, bool train) {
  const StackShape s = checked_stack(weights, num_layers, bidirectional, dropout);
  const bool lstm = checked_mode(mode) == Mode::LSTM;
  check_stacked_state("hx", hx, s.count());
  const Tensor* c0 = defined_or_null(cx);
  TORCH_CHECK(!lstm || c0 != nullptr, "rnnkern: LSTM needs a cell state cx");
  if (lstm) check_stacked_state("cx", *c0, s.count());
  if (wavefront_wanted<Backend>(checked_mode(mode), input, batch_sizes, weights, s, dropout)) {
    return wavefront_forward<Backend>(mode, input, batch_sizes, hx, c0, weights, s, dropout,
                                      train);
  }

  StackResults results{lstm, train, s.directions == 1, {}, {}, {}, {}};
  Tensor layer_input = input, output;
  for (int64_t layer = 0; layer < s.layers; ++layer) {
    ForwardResult r[2];
    run_directions<Backend>(s, [&](int d) {
      const int64_t i = layer * s.directions + d;
      r[d] = layer_forward<Backend>(
          mode, layer_input, batch_sizes, hx[i], lstm ? OptTensor((*c0)[i]) : std::nullopt,
          weight_arg(weights, i, 0, "w_ih"), weight_arg(weights, i, 1, "w_hh"),
          optional_weight(weights, i, 2), optional_weight(weights, i, 3),
          optional_weight(weights, i, 4), d == 1, train);
    });
    const bool top = layer == s.layers - 1;
    for (int d = 0; d < s.directions; ++d) results.add_direction(r[d], top);
    output = s.directions == 2 ? at::cat({std::get<0>(r[0]), std::get<0>(r[1])}, -1)
                               : std::get<0>(r[0]);
    if (top) break;
    Tensor noise;
    layer_input = output;
    if (dropout > 0) std::tie(layer_input, noise) = stack_dropout(output, dropout);
    const bool repeats_output = s.directions == 1 && dropout == 0;
    results.add_input(repeats_output ? Tensor() : layer_input, noise);
  }
  return results.finish(output);
}

// output_mask: gradients wanted for {input, hx and cx, the weights, the
// biases}. grad_weights: five per layer-direction as in `weights`, empty
// where not wanted or absent. batch: rows of hx.
template <class Backend>
StackBackwardResult stack_backward(int64_t mode, const Tensor& input,
                                   const OptTensor& batch_sizes, const DirectionArgs& weights,
                                   const Tensor& output, at::TensorList saved,
                                   const OptTensor& grad_output, const OptTensor& grad_hy,
                                   const OptTensor& grad_cy, int64_t num_layers,
                                   bool bidirectional, double dropout, int64_t batch,
                                   std::array<bool, 4> output_mask) {
  const StackShape s = checked_stack(weights, num_layers, bidirectional, dropout);
  const bool lstm = checked_mode(mode) == Mode::LSTM;
  const int64_t per_layer_saved = kSavedPerDirection * s.count();
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == per_layer_saved + 2 * (s.layers - 1),
              "rnnkern: stack_backward: the saved state does not match the stack; was the "
              "forward run with train=True?");
  const Tensor* g_hy = defined_or_null(grad_hy);
  const Tensor* g_cy = defined_or_null(grad_cy);
  if (g_hy) check_stacked_state("grad_hy", *g_hy, s.count());
  if (g_cy && lstm) check_stacked_state("grad_cy", *g_cy, s.count());
  auto none = [&] { return at::empty({0}, input.options()); };
  // Empty entries are 1-D; a layer's output or input gradient has 2 or 3 dimensions.
  auto present = [](const Tensor& t) { return t.defined() && t.dim() > 1; };
  // A layer's output per direction: saved, or a slice of the op's output.
  auto layer_output = [&](int64_t layer, int d) {
    const Tensor& t = saved[kSavedPerDirection * (layer * s.directions + d)];
    return present(t) ? t : output;
  };
  auto layer_input = [&](int64_t layer) {
    if (layer == 0) return input;
    const Tensor& t = saved[per_layer_saved + 2 * (layer - 1)];
    return present(t) ? t : layer_output(layer - 1, 0);
  };

  // A stack whose forward ran as a wavefront runs its backward loops as one too.
  std::vector<BackwardResult> wave;
  if (wavefront_wanted<Backend>(checked_mode(mode), input, batch_sizes, weights, s, dropout)) {
    std::vector<Tensor> inputs, outputs, noise;
    for (int64_t l = 0; l < s.layers; ++l) {
      inputs.push_back(layer_input(l));
      outputs.push_back(layer_output(l, 0));
      noise.push_back(l > 0 && dropout > 0 ? saved[per_layer_saved + 2 * (l - 1) + 1] : Tensor());
    }
    wave = wavefront_backward<Backend>(mode, batch_sizes, weights, inputs, outputs, noise, saved,
                                       grad_output, g_hy, g_cy, batch, output_mask);
  }
  std::vector<Tensor> grad_h(s.count()), grad_c(s.count());
  std::vector<Tensor> grad_weights(kWeightsPerDirection * s.count());
  OptTensor grad_above = grad_output;  // of the current layer's (concatenated) output
  Tensor grad_input = none();
  for (int64_t layer = s.layers - 1; layer >= 0; --layer) {
    const Tensor x = layer_input(layer);
    BackwardResult r[2];
    BackwardData data[2];
    auto loop = [&](int d) {
      const int64_t i = layer * s.directions + d, base = kSavedPerDirection * i;
      const Tensor w_hh = weight_arg(weights, i, 1, "w_hh");
      const int64_t R = w_hh.size(1);
      OptTensor g_out;
      if (const Tensor* g = defined_or_null(grad_above)) {
        g_out = s.directions == 2 ? g->narrow(-1, d * R, R) : *g;
      }
      Tensor out = layer_output(layer, d);
      if (out.is_same(output) && s.directions == 2) out = out.narrow(-1, d * R, R);
      const typename Backend::CallScope scope(x, batch_sizes);
      data[d] = backward_data<Backend>(
          mode, x, batch_sizes, weight_arg(weights, i, 0, "w_ih"), w_hh,
          optional_weight(weights, i, 4), out, saved[base + 1], saved[base + 2], saved[base + 3],
          g_out, g_hy ? OptTensor((*g_hy)[i]) : std::nullopt,
          g_cy && lstm ? OptTensor((*g_cy)[i]) : std::nullopt, d == 1, batch);
    };
    auto finish = [&](int d) {
      const int64_t i = layer * s.directions + d;
      const bool has_bias = optional_weight(weights, i, 2).has_value();
      const typename Backend::CallScope scope(x, batch_sizes);
      r[d] = finish_backward<Backend>(data[d], x, weight_arg(weights, i, 0, "w_ih"),
                                      {layer > 0 || output_mask[0], output_mask[1],
                                       output_mask[2], output_mask[3] && has_bias});
      data[d] = BackwardData{};  // its buffers go before the next layer's
    };
    if (!wave.empty()) {
      r[0] = wave[layer];
    } else {
      run_directions_backward<Backend>(s, loop, finish);
    }
    Tensor grad_x;
    for (int d = 0; d < s.directions; ++d) {
      const int64_t i = layer * s.directions + d;
      grad_h[i] = std::get<1>(r[d]);
      grad_c[i] = std::get<2>(r[d]);
      const Tensor found[] = {std::get<3>(r[d]), std::get<4>(r[d]), std::get<5>(r[d]),
                              std::get<6>(r[d]), std::get<7>(r[d])};
      for (int64_t k = 0; k < kWeightsPerDirection; ++k) {
        grad_weights[kWeightsPerDirection * i + k] = found[k];
      }
      const Tensor& g = std::get<0>(r[d]);
      if (present(g)) grad_x = grad_x.defined() ? at::add(grad_x, g) : g;
    }
    if (layer == 0) {
      if (output_mask[0] && grad_x.defined()) grad_input = grad_x;
      break;
    }
    if (!wave.empty()) continue;  // the loops gave the layer below its output's gradient
    if (dropout > 0) {
      grad_x = stack_dropout_backward(grad_x, saved[per_layer_saved + 2 * (layer - 1) + 1],
                                      dropout);
    }
    grad_above = grad_x;
  }
  const bool states = output_mask[1];
  return {grad_input, states ? at::stack(grad_h) : none(),
          states && lstm ? at::stack(grad_c) : none(), grad_weights};
}

}  // namespace rnnkern
