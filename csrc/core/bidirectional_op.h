// Both directions of one bidirectional layer in one op call. Each direction is
// layer_op.h's forward or backward; the backend runs the two at once where it
// can (Backend::both_directions(body) calls body(0) and body(1);
// Backend::both_directions_backward(loop, finish) the backward's time loops and
// the gradients after them): on the CPU each direction on its own core, keeping
// its own weights in that core's cache, with no synchronisation between them
// until the layer ends; on CUDA the two loops in one grid, then the gradients.
//
// The arguments of a direction come as one list:
//   forward:  [hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr]
//   backward: [w_ih, w_hh, w_hr, output, saved_h_prev, saved_gates, saved_extra,
//              grad_output, grad_hy, grad_cy]
// (absent ones None); the results are the per-direction op's, as lists.
#pragma once

#include <ATen/core/List.h>

#include <tuple>
#include <vector>

#include "layer_backward.h"

namespace rnnkern {

using DirectionArgs = c10::List<std::optional<Tensor>>;
using TwoDirections = std::tuple<std::vector<Tensor>, std::vector<Tensor>>;

inline OptTensor direction_arg(const DirectionArgs& args, size_t index) {
  const std::optional<Tensor> t = args.get(index);
  return t.has_value() && t->defined() ? t : std::nullopt;
}

inline Tensor required_arg(const DirectionArgs& args, size_t index, const char* name) {
  const OptTensor t = direction_arg(args, index);
  TORCH_CHECK(t.has_value(), "rnnkern: bidirectional op: ", name, " is required");
  return *t;
}

template <typename Tuple, size_t... I>
std::vector<Tensor> as_vector(const Tuple& t, std::index_sequence<I...>) {
  return {std::get<I>(t)...};
}

template <typename... Ts>
std::vector<Tensor> as_vector(const std::tuple<Ts...>& t) {
  return as_vector(t, std::index_sequence_for<Ts...>{});
}

template <class Backend>
TwoDirections layer_forward_bidirectional(int64_t mode, const Tensor& input,
                                          const OptTensor& batch_sizes,
                                          const DirectionArgs& forward,
                                          const DirectionArgs& reverse, bool train) {
  TORCH_CHECK(forward.size() == 7 && reverse.size() == 7,
              "rnnkern: layer_forward_bidirectional takes 7 arguments per direction");
  ForwardResult results[2];
  Backend::both_directions([&](int d) {
    const DirectionArgs& a = d == 0 ? forward : reverse;
    results[d] = layer_forward<Backend>(mode, input, batch_sizes, required_arg(a, 0, "hx"),
                                        direction_arg(a, 1), required_arg(a, 2, "w_ih"),
                                        required_arg(a, 3, "w_hh"), direction_arg(a, 4),
                                        direction_arg(a, 5), direction_arg(a, 6), d == 1, train);
  });
  return {as_vector(results[0]), as_vector(results[1])};
}

template <class Backend>
TwoDirections layer_backward_bidirectional(int64_t mode, const Tensor& input,
                                           const OptTensor& batch_sizes,
                                           const DirectionArgs& forward,
                                           const DirectionArgs& reverse, int64_t batch,
                                           std::array<bool, 4> output_mask) {
  TORCH_CHECK(forward.size() == 10 && reverse.size() == 10,
              "rnnkern: layer_backward_bidirectional takes 10 arguments per direction");
  BackwardResult results[2];
  BackwardData data[2];
  // The two loops (paired where the backend can), then each one's gradients.
  Backend::both_directions_backward(
      [&](int d) {
        const DirectionArgs& a = d == 0 ? forward : reverse;
        const typename Backend::CallScope scope(input, batch_sizes);
        data[d] = backward_data<Backend>(
            mode, input, batch_sizes, required_arg(a, 0, "w_ih"), required_arg(a, 1, "w_hh"),
            direction_arg(a, 2), required_arg(a, 3, "output"),
            required_arg(a, 4, "saved_h_prev"), required_arg(a, 5, "saved_gates"),
            required_arg(a, 6, "saved_extra"), direction_arg(a, 7), direction_arg(a, 8),
            direction_arg(a, 9), d == 1, batch);
      },
      [&](int d) {
        const DirectionArgs& a = d == 0 ? forward : reverse;
        const typename Backend::CallScope scope(input, batch_sizes);
        results[d] = finish_backward<Backend>(data[d], input, required_arg(a, 0, "w_ih"),
                                              output_mask);
      });
  return {as_vector(results[0]), as_vector(results[1])};
}

}  // namespace rnnkern
