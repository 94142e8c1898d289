// One step of a cell (RNNCell, LSTMCell, GRUCell) for inference: the gates
// from two GEMMs into one buffer, then the backend's pointwise step. No
// sequence layout, nothing saved for backward, no copy of a state the step
// does not update in place. Shared by every device (a Backend as in
// layer_op.h). Training steps keep the layer op (their backward needs its
// saved state).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>

#include <tuple>

#include "layer_op.h"

namespace rnnkern {

// input [B, I], hx [B, H], cx [B, H] (LSTM); weights as torch.nn's cells.
// Returns (h', c') with c' empty except for the LSTM.
template <class Backend>
std::tuple<Tensor, Tensor> cell_forward(int64_t mode_id, const Tensor& input, const Tensor& hx,
                                        const OptTensor& cx, const Tensor& w_ih,
                                        const Tensor& w_hh, const OptTensor& b_ih,
                                        const OptTensor& b_hh) {
  const typename Backend::CallScope scope(input, std::nullopt);
  const Mode mode = checked_mode(mode_id);
  TORCH_CHECK(input.dim() == 2, "rnnkern: a cell's input must be [batch, input_size], got ",
              input.sizes());
  const LayerDims dims = checked_weights(mode, input, w_ih, w_hh, std::nullopt);
  const int64_t B = input.size(0), H = dims.hidden, GH = w_hh.size(0);
  check_state("hx", hx, input, B, H);
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
                                     nullptr};
    if (B > 0) Backend::forward_step(step);
  });
  return {hy, cy};
}

}  // namespace rnnkern
