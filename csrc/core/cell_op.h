// One step of a cell (RNNCell, LSTMCell, GRUCell): the gates from two GEMMs
// into one buffer, then the backend's pointwise step. No sequence layout, no
// copy of a state the step does not update in place. For inference nothing is
// saved (cell_forward); a training step keeps the activated gates and the
// cell's extra value, as the layer op saves them per row (cell_forward_train),
// and cell_backward is that step's backward: the pointwise backward, then the
// products for the input, state, weights and biases. Shared by every device
// (a Backend as in layer_op.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <array>

#include <tuple>

#include "layer_op.h"

namespace rnnkern {

using CellTrainResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;

struct CellDims {
  Mode mode;
  int64_t batch, hidden, gate_rows;
};

inline CellDims checked_cell(int64_t mode_id, const Tensor& input, const Tensor& hx,
                             const Tensor& w_ih, const Tensor& w_hh) {
  const Mode mode = checked_mode(mode_id);
  TORCH_CHECK(input.dim() == 2, "rnnkern: a cell's input must be [batch, input_size], got ",
              input.sizes());
  const LayerDims dims = checked_weights(mode, input, w_ih, w_hh, std::nullopt);
  check_state("hx", hx, input, input.size(0), dims.hidden);
  return {mode, input.size(0), dims.hidden, w_hh.size(0)};
}

// input [B, I], hx [B, H], cx [B, H] (LSTM); weights as torch.nn's cells.
// Returns (h', c', gates, extra): c' empty except for the LSTM; with train the
// activated gates [B, G*H] and the LSTM's c / the GRU's h_n [B, H] (else empty).
template <class Backend>
CellTrainResult cell_step(int64_t mode_id, const Tensor& input, const Tensor& hx,
                          const OptTensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                          const OptTensor& b_ih, const OptTensor& b_hh, bool train) {
  const typename Backend::CallScope scope(input, std::nullopt);
  const CellDims d = checked_cell(mode_id, input, hx, w_ih, w_hh);
  const Mode mode = d.mode;
  const int64_t B = d.batch, H = d.hidden, GH = d.gate_rows;
  const Tensor* c0 = defined_or_null(cx);
  TORCH_CHECK(mode != Mode::LSTM || c0 != nullptr, "rnnkern: LSTM needs a cell state cx");
  if (mode == Mode::LSTM) check_state("cx", *c0, input, B, H);
  const Tensor* bi = defined_or_null(b_ih);
  const Tensor* bh = defined_or_null(b_hh);
  for (const Tensor* bias : {bi, bh}) {
    if (bias == nullptr) continue;
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == GH, "rnnkern: bias must have shape [", GH,
                "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type() && bias->device() == input.device(),
                "rnnkern: bias must match the input's dtype and device");
  }
  const bool gru = mode == Mode::GRU;
  Tensor bias_x, bias_hn;
  std::tie(bias_x, bias_hn) = folded_biases(mode, H, b_ih, b_hh, input.options());
  Tensor gates = Backend::input_projection(input.contiguous(), w_ih, bias_x);
  const Tensor h_prev = hx.contiguous(), w = w_hh.contiguous();
  // The GRU reads h' where it writes h; the LSTM updates c in place.
  Tensor hy = gru ? h_prev.clone() : at::empty({B, H}, input.options());
  Tensor cy = mode == Mode::LSTM ? c0->contiguous().clone() : at::empty({0}, input.options());
  Tensor gates_h = gru ? at::empty({B, GH}, input.options()) : Tensor();
  const bool has_extra = train && mode != Mode::RNN_TANH && mode != Mode::RNN_RELU;
  Tensor extra = at::empty({has_extra ? B : 0, has_extra ? H : 0}, input.options());
  RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_cell_forward", [&] {
    scalar_t* g = gates.data_ptr<scalar_t>();
    scalar_t* gh = ptr_or_null<scalar_t>(gates_h);
    Backend::gemm(false, true, B, GH, H, scalar_t(1), h_prev.data_ptr<scalar_t>(), H,
                  w.data_ptr<scalar_t>(), H, scalar_t(gru ? 0 : 1), gru ? gh : g, GH);
    const ForwardStep<scalar_t> step{mode,
                                     B,
                                     H,
                                     g,
                                     gh,
                                     ptr_or_null<scalar_t>(bias_hn),
                                     hy.data_ptr<scalar_t>(),
                                     ptr_or_null<scalar_t>(cy),
                                     hy.data_ptr<scalar_t>(),
                                     has_extra ? extra.data_ptr<scalar_t>() : nullptr};
    if (B > 0) Backend::forward_step(step);
  });
  auto none = [&] { return at::empty({0}, input.options()); };
  return {hy, cy, train ? gates : none(), has_extra ? extra : none()};
}

template <class Backend>
std::tuple<Tensor, Tensor> cell_forward(int64_t mode, const Tensor& input, const Tensor& hx,
                                        const OptTensor& cx, const Tensor& w_ih,
                                        const Tensor& w_hh, const OptTensor& b_ih,
                                        const OptTensor& b_hh) {
  Tensor hy, cy;
  std::tie(hy, cy, std::ignore, std::ignore) =
      cell_step<Backend>(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, false);
  return {hy, cy};
}

template <class Backend>
CellTrainResult cell_forward_train(int64_t mode, const Tensor& input, const Tensor& hx,
                                   const OptTensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                                   const OptTensor& b_ih, const OptTensor& b_hh) {
  return cell_step<Backend>(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, true);
}

using CellBackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The backward of cell_forward_train's step: its input, hx, weights, saved
// gates and extra, and hy; grad_hy / grad_cy may be absent (zero).
// output_mask: {input, hx and cx, the weights, the biases}; gradients not
// asked for are empty. Returns (input, hx, cx, w_ih, w_hh, b_ih, b_hh).
template <class Backend>
CellBackwardResult cell_backward(int64_t mode_id, const Tensor& input, const Tensor& hx,
                                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& gates,
                                 const Tensor& extra, const Tensor& hy,
                                 const OptTensor& grad_hy, const OptTensor& grad_cy,
                                 std::array<bool, 4> output_mask) {
  const typename Backend::CallScope scope(input, std::nullopt);
  const CellDims d = checked_cell(mode_id, input, hx, w_ih, w_hh);
  const Mode mode = d.mode;
  const int64_t B = d.batch, H = d.hidden, GH = d.gate_rows;
  check_state("hy", hy, input, B, H);
  const bool gru = mode == Mode::GRU, lstm = mode == Mode::LSTM;
  TORCH_CHECK(gates.numel() == B * GH && extra.numel() == (lstm || gru ? B * H : 0),
              "rnnkern: cell_backward: the saved state does not match the step; was the "
              "forward run by cell_forward_train?");
  const auto opts = input.options();
  Tensor dh = state_grad_buffer(grad_hy, input, B, H);
  Tensor dc = lstm ? state_grad_buffer(grad_cy, input, B, H) : Tensor();
  Tensor dgates = at::empty({B, GH}, opts);
  Tensor dgates_h = gru ? at::empty({B, GH}, opts) : dgates;
  const Tensor h_prev = hx.contiguous(), x = input.contiguous(), w = w_hh.contiguous();
  const Tensor gates_c = gates.contiguous(), extra_c = extra.contiguous(), hy_c = hy.contiguous();
  RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_cell_backward", [&] {
    const BackwardStep<scalar_t> step{mode,
                                      B,
                                      H,
                                      gates_c.data_ptr<scalar_t>(),
                                      lstm || gru ? extra_c.data_ptr<scalar_t>() : nullptr,
                                      h_prev.data_ptr<scalar_t>(),
                                      hy_c.data_ptr<scalar_t>(),
                                      nullptr,
                                      dh.data_ptr<scalar_t>(),
                                      ptr_or_null<scalar_t>(dc),
                                      dgates.data_ptr<scalar_t>(),
                                      dgates_h.data_ptr<scalar_t>()};
    if (B > 0) Backend::backward_step(step);
  });
  auto none = [&] { return at::empty({0}, opts); };
  Tensor grad_input = none(), grad_w_ih = none(), grad_w_hh = none(), grad_b_ih = none(),
         grad_b_hh = none();
  // The input side (dx, dW_ih) and the hidden side (dh', dW_hh): independent
  // products, of like sizes when I and H are, which a backend may run at once
  // (the CPU: one thread each, one parallel region instead of four).
  auto side = [&](int s) {
    if (s == 0) {
      if (output_mask[0]) grad_input = Backend::matmul(dgates, false, w_ih);
      if (output_mask[2]) grad_w_ih = Backend::matmul(dgates, true, x);
      return;
    }
    if (output_mask[1] && B > 0) {  // dh' = dgates_h W_hh (+ the GRU step's direct part)
      RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_cell_backward_dh", [&] {
        Backend::gemm(false, false, B, H, GH, scalar_t(1), dgates_h.data_ptr<scalar_t>(), GH,
                      w.data_ptr<scalar_t>(), H, scalar_t(gru ? 1 : 0), dh.data_ptr<scalar_t>(),
                      H);
      });
    }
    if (output_mask[2]) grad_w_hh = Backend::matmul(dgates_h, true, h_prev);
  };
  const int64_t I = x.size(1);
  if (I <= 2 * H && H <= 2 * I) {
    Backend::concurrently(side);
  } else {
    side(0);
    side(1);
  }
  if (output_mask[3]) {
    grad_b_ih = Backend::column_sum(dgates);
    grad_b_hh = gru ? Backend::column_sum(dgates_h) : grad_b_ih.clone();
  }
  return {grad_input, output_mask[1] ? dh : none(), output_mask[1] && lstm ? dc : none(),
          grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace rnnkern
