// The backward ops of one layer-direction, shared by every device (a Backend
// as in layer_op.h): argument checks and buffers (prepare_backward), the time
// loop (driver.h), then the weight, bias and input gradients as single GEMMs /
// reductions over all steps (finish_backward). stack_wavefront.h runs the
// loops of a stack's layers at once between the same two halves.
#pragma once

#include "layer_op.h"

namespace rnnkern {

// The time loop of backward: the gradients of the gate pre-activations
// (dgates; the GRU's hidden-side ones apart in dgates_h), of the projected
// output (dh_out, with the projection's input h_raw) and of the initial state.
// grad_output is dy, read by the loop (a caller may fill it while the loop runs).
struct BackwardData {
  Tensor dgates, dgates_h, dh_out, h_raw, dh, dc, h_prev;
  Mode mode;
  SeqLayout seq;
  LayerDims dims;
  Tensor w_hh, w_hr, gates, extra, output, grad_output, dh_raw;

  template <typename T>
  BackwardBuffers<T> buffers() const {
    return {w_hh.data_ptr<T>(),           ptr_or_null<T>(w_hr),      gates.data_ptr<T>(),
            ptr_or_null<T>(extra),        h_prev.data_ptr<T>(),      output.data_ptr<T>(),
            ptr_or_null<T>(grad_output),  dh.data_ptr<T>(),          ptr_or_null<T>(dc),
            dgates.data_ptr<T>(),         dgates_h.data_ptr<T>(),    ptr_or_null<T>(dh_out),
            ptr_or_null<T>(dh_raw)};
  }
};

#define RNNKERN_BACKWARD_ARGS                                                                 \
  int64_t mode_id, const Tensor &input, const OptTensor &batch_sizes, const Tensor &w_ih,    \
      const Tensor &w_hh, const OptTensor &w_hr, const Tensor &output,                        \
      const Tensor &saved_h_prev, const Tensor &saved_gates, const Tensor &saved_extra,       \
      const OptTensor &grad_output, const OptTensor &grad_hy, const OptTensor &grad_cy,       \
      bool reverse, int64_t batch

inline BackwardData prepare_backward(RNNKERN_BACKWARD_ARGS) {
  (void)reverse;
  BackwardData d;
  d.mode = checked_mode(mode_id);
  d.seq = checked_layout(input, batch_sizes);
  d.dims = checked_weights(d.mode, input, w_ih, w_hh, w_hr);
  const Mode mode = d.mode;
  const SeqLayout& seq = d.seq;
  const int64_t H = d.dims.hidden, R = d.dims.out, N = seq.rows_total;
  const int64_t GH = w_hh.size(0);
  const bool proj = defined_or_null(w_hr) != nullptr;
  TORCH_CHECK(batch == seq.batch, "rnnkern: batch ", batch, " does not match the input's ",
              seq.batch);
  TORCH_CHECK(saved_h_prev.numel() == N * R && saved_gates.numel() == N * GH &&
                  output.numel() == N * R,
              "rnnkern: saved forward state does not match the input; was the forward run "
              "with train=True?");
  const bool has_extra = mode == Mode::LSTM || mode == Mode::GRU;
  TORCH_CHECK(!has_extra || saved_extra.numel() == (proj ? 2 : 1) * N * H,
              "rnnkern: saved forward state does not match the input");

  const auto opts = input.options();
  d.dh = state_grad_buffer(grad_hy, input, seq.batch, R);
  d.dc = mode == Mode::LSTM ? state_grad_buffer(grad_cy, input, seq.batch, H) : Tensor();
  if (const Tensor* g = defined_or_null(grad_output)) {
    TORCH_CHECK(g->numel() == N * R, "rnnkern: grad_output has the wrong number of elements");
    d.grad_output = g->contiguous();
  }
  d.dgates = at::empty({N, GH}, opts);
  d.dgates_h = mode == Mode::GRU ? at::empty({N, GH}, opts) : d.dgates;
  d.dh_out = proj ? at::empty({N, R}, opts) : Tensor();
  d.dh_raw = proj ? at::empty({seq.batch, H}, opts) : Tensor();
  d.output = output.contiguous();
  d.w_hh = w_hh.contiguous();
  d.w_hr = proj ? w_hr->contiguous() : Tensor();
  d.h_prev = saved_h_prev.contiguous().view({N, R});
  d.gates = saved_gates.contiguous();
  d.extra = !has_extra ? Tensor()
                       : (proj ? saved_extra.contiguous().view({2, N, H})
                               : saved_extra.contiguous().view({N, H}));
  d.h_raw = proj ? d.extra[1] : Tensor();
  return d;
}

template <class Backend>
BackwardData backward_data(RNNKERN_BACKWARD_ARGS) {
  BackwardData d = prepare_backward(mode_id, input, batch_sizes, w_ih, w_hh, w_hr, output,
                                    saved_h_prev, saved_gates, saved_extra, grad_output,
                                    grad_hy, grad_cy, reverse, batch);
  RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_layer_backward", [&] {
    backward_loop<Backend, scalar_t>(d.dims, d.seq, reverse, d.buffers<scalar_t>());
  });
  return d;
}

// The gradients after the loop. output_mask: gradients wanted for {input, hx
// and cx, the weights, the biases}; those not asked for are returned as
// (distinct) empty tensors.
template <class Backend>
BackwardResult finish_backward(const BackwardData& d, const Tensor& input, const Tensor& w_ih,
                               std::array<bool, 4> output_mask) {
  const int64_t N = d.seq.rows_total;
  auto none = [&] { return at::empty({0}, input.options()); };
  Tensor grad_input = none(), grad_w_ih = none(), grad_w_hh = none(), grad_w_hr = none(),
         grad_b_ih = none(), grad_b_hh = none();
  if (output_mask[0]) grad_input = Backend::matmul(d.dgates, false, w_ih).view(input.sizes());
  if (output_mask[2]) {
    const Tensor x = input.contiguous().view({N, input.size(-1)});
    grad_w_ih = Backend::matmul(d.dgates, true, x);
    grad_w_hh = Backend::matmul(d.dgates_h, true, d.h_prev);
    if (d.h_raw.defined()) grad_w_hr = Backend::matmul(d.dh_out, true, d.h_raw);
  }
  if (output_mask[3]) {
    grad_b_ih = Backend::column_sum(d.dgates);
    grad_b_hh = d.mode == Mode::GRU ? Backend::column_sum(d.dgates_h) : grad_b_ih.clone();
  }
  Tensor dc = output_mask[1] && d.mode == Mode::LSTM ? d.dc : none();
  Tensor dh = output_mask[1] ? d.dh : none();
  return {grad_input, dh, dc, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr};
}

#define RNNKERN_BACKWARD_CALL                                                                 \
  mode_id, input, batch_sizes, w_ih, w_hh, w_hr, output, saved_h_prev, saved_gates,           \
      saved_extra, grad_output, grad_hy, grad_cy, reverse, batch

template <class Backend>
BackwardResult layer_backward(RNNKERN_BACKWARD_ARGS, std::array<bool, 4> output_mask) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const BackwardData d = backward_data<Backend>(RNNKERN_BACKWARD_CALL);
  return finish_backward<Backend>(d, input, w_ih, output_mask);
}

// The time loop's gradients themselves, for weight gradients that are not
// summed over all rows (per-sample gradients under vmap): grad_input (when
// asked for), grad_hx, grad_cx (LSTM), grad_gates [N, G*H], grad_gates_h (the
// GRU's hidden-side ones), grad_h_out [N, R] (projection); absent ones empty.
template <class Backend>
BackwardDataResult layer_backward_data(RNNKERN_BACKWARD_ARGS, bool want_input) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const BackwardData d = backward_data<Backend>(RNNKERN_BACKWARD_CALL);
  const Mode mode = d.mode;
  auto none = [&] { return at::empty({0}, input.options()); };
  Tensor grad_input =
      want_input ? Backend::matmul(d.dgates, false, w_ih).view(input.sizes()) : none();
  return {grad_input, d.dh, mode == Mode::LSTM ? d.dc : none(), d.dgates,
          mode == Mode::GRU ? d.dgates_h : none(), d.h_raw.defined() ? d.dh_out : none()};
}

#undef RNNKERN_BACKWARD_CALL
#undef RNNKERN_BACKWARD_ARGS

}  // namespace rnnkern
