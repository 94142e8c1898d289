// The arguments of the stack ops (stack_op.h) and what their paths share:
// the weights list, the stacked states, torch.nn's dropout.
#pragma once

#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/native_dropout.h>
#include <ATen/ops/native_dropout_backward.h>
#include <ATen/ops/stack.h>

#include <tuple>
#include <vector>

#include "bidirectional_op.h"
#include "layer_backward.h"

namespace rnnkern {

using StackForwardResult = std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>;
using StackBackwardResult = std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>;

constexpr int64_t kWeightsPerDirection = 5;
constexpr int64_t kSavedPerDirection = 4;

// torch.nn.functional.dropout's own algorithm, so that a seed draws today's
// masks: ATen's _dropout on the CPU (noise = bernoulli(1 - p) / (1 - p)) and
// its fused native_dropout on CUDA. Returns the result and what backward
// multiplies by (on CUDA native_dropout's boolean mask).
inline Tensor cpu_dropout_noise(const Tensor& x, double p) {
  Tensor noise = at::empty_like(x).bernoulli_(1 - p);
  noise.div_(1 - p);
  return noise;
}

inline std::tuple<Tensor, Tensor> stack_dropout(const Tensor& x, double p) {
  if (p == 1 || x.numel() == 0) {
    const Tensor zero = at::full({}, p == 1 ? 0.0 : 1.0, x.options());
    return {at::mul(x, zero), zero};
  }
  if (x.is_cuda()) return at::native_dropout(x, p, true);
  const Tensor noise = cpu_dropout_noise(x, p);
  return {at::mul(x, noise), noise};
}

inline Tensor stack_dropout_backward(const Tensor& grad, const Tensor& noise, double p) {
  if (noise.scalar_type() == at::kBool) return at::native_dropout_backward(grad, noise, 1 / (1 - p));
  return at::mul(grad, noise);
}

struct StackShape {
  int64_t layers, directions;
  int64_t count() const { return layers * directions; }
};

inline StackShape checked_stack(const DirectionArgs& weights, int64_t num_layers,
                                bool bidirectional, double dropout) {
  TORCH_CHECK(num_layers >= 1, "rnnkern: num_layers must be at least 1, got ", num_layers);
  const StackShape s{num_layers, bidirectional ? 2 : 1};
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == kWeightsPerDirection * s.count(),
              "rnnkern: the stack ops take ", kWeightsPerDirection,
              " weights per layer-direction, ", kWeightsPerDirection * s.count(), " in all; got ",
              weights.size());
  TORCH_CHECK(dropout >= 0 && dropout <= 1,
              "dropout probability has to be between 0 and 1, but got ", dropout);
  return s;
}

inline Tensor weight_arg(const DirectionArgs& weights, int64_t index, int64_t k,
                         const char* name) {
  return required_arg(weights, kWeightsPerDirection * index + k, name);
}

inline OptTensor optional_weight(const DirectionArgs& weights, int64_t index, int64_t k) {
  return direction_arg(weights, kWeightsPerDirection * index + k);
}

inline void check_stacked_state(const char* name, const Tensor& state, int64_t count) {
  TORCH_CHECK(state.dim() == 3 && state.size(0) == count, "rnnkern: ", name,
              " must have shape [num_layers * num_directions = ", count, ", batch, size], got ",
              state.sizes());
}

// What a forward of the stack returns besides its output, gathered layer by
// layer by either forward path: h_n, c_n and, with train, the saved list in
// stack_op.h's layout.
struct StackResults {
  bool lstm, train, one_direction;
  std::vector<Tensor> h_n, c_n, saved, inputs;

  // A layer-direction's layer_forward results, in torch.nn's order.
  void add_direction(const ForwardResult& r, bool top) {
    h_n.push_back(std::get<1>(r));
    if (lstm) c_n.push_back(std::get<2>(r));
    if (train) {  // the top output of a one-direction stack is the op's output
      saved.insert(saved.end(), {top && one_direction ? Tensor() : std::get<0>(r),
                                 std::get<3>(r), std::get<4>(r), std::get<5>(r)});
    }
  }
  // A layer above the first: its input (undefined where it is the output of
  // the layer below, unchanged) and the dropout noise (undefined without).
  void add_input(const Tensor& input, const Tensor& noise) {
    if (train) inputs.insert(inputs.end(), {input, noise});
  }
  StackForwardResult finish(const Tensor& output) {
    auto none = [&] { return at::empty({0}, output.options()); };
    saved.insert(saved.end(), inputs.begin(), inputs.end());
    // Empty entries are distinct empty tensors, not undefined ones.
    for (Tensor& t : saved) {
      if (!t.defined()) t = none();
    }
    return {output, at::stack(h_n), lstm ? at::stack(c_n) : none(), saved};
  }
};

template <class Backend, typename Body>
void run_directions(const StackShape& s, const Body& body) {
  if (s.directions == 2) {
    Backend::both_directions(body);
  } else {
    body(0);
  }
}

// A layer's backward: loop(d) the time loop of direction d, finish(d) the
// gradients that need it (Backend::both_directions_backward).
template <class Backend, typename Loop, typename Finish>
void run_directions_backward(const StackShape& s, const Loop& loop, const Finish& finish) {
  if (s.directions == 2) {
    Backend::both_directions_backward(loop, finish);
  } else {
    loop(0);
    finish(0);
  }
}

}  // namespace rnnkern
