// The tensor-level ops of one layer-direction, shared by every device
// (a Backend as in driver.h, plus column_sum(Tensor [rows, cols]) -> [cols] and
// input_projection(x [N, I], w_ih [GH, I], bias [GH] or undefined) -> [N, GH], and
// matmul(a, trans_a, b) -> op(a) b, and a CallScope(input, batch_sizes) type held
// for the whole op call: the device guard, or the CPU's weight-packing scope):
// argument checks, buffer allocation, the input projection (one GEMM for all
// steps), the time loop (driver.h) and, in backward, the weight/bias/input
// gradients as single GEMMs / reductions after the loop.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "driver.h"

namespace rnnkern {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardResult =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardDataResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Checks shared by forward and backward; defined in layer_checks.cpp.
Mode checked_mode(int64_t mode);
SeqLayout checked_layout(const Tensor& input, const OptTensor& batch_sizes);
// Returns H and R (the size of h: H, or proj_size with w_hr).
LayerDims checked_weights(Mode mode, const Tensor& input, const Tensor& w_ih, const Tensor& w_hh,
                          const OptTensor& w_hr);
void check_state(const char* name, const Tensor& state, const Tensor& like, int64_t batch,
                 int64_t size);

inline const Tensor* defined_or_null(const OptTensor& t) {
  return t.has_value() && t->defined() ? &*t : nullptr;
}

// The gradient of a final state as the buffer a backward loop updates in
// place: a copy of g (checked to be [batch, size]), or zeros.
inline Tensor state_grad_buffer(const OptTensor& g, const Tensor& like, int64_t batch,
                                int64_t size) {
  const Tensor* t = defined_or_null(g);
  if (t == nullptr) return at::zeros({batch, size}, like.options());
  check_state("grad of the final state", *t, like, batch, size);
  return t->contiguous().clone();
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Every bias that adds to the pre-activations, folded into one for the input
// projection, and the GRU's b_hn, which stays apart (r scales it); either may
// be undefined.
inline std::tuple<Tensor, Tensor> folded_biases(Mode mode, int64_t H, const OptTensor& b_ih,
                                                const OptTensor& b_hh,
                                                const at::TensorOptions& opts) {
  const Tensor* bi = defined_or_null(b_ih);
  const Tensor* bh = defined_or_null(b_hh);
  if (bh != nullptr && mode == Mode::GRU) {
    Tensor bias_x = bi ? bi->clone() : at::zeros({gate_count(mode) * H}, opts);
    bias_x.narrow(0, 0, 2 * H).add_(bh->narrow(0, 0, 2 * H));
    return {bias_x, bh->narrow(0, 2 * H, H).contiguous()};
  }
  if (bh != nullptr) return {bi ? at::add(*bi, *bh) : *bh, Tensor()};
  return {bi ? *bi : Tensor(), Tensor()};
}

#define RNNKERN_DISPATCH_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, TYPE, NAME, __VA_ARGS__)

// A layer-direction's forward up to its time loop: the checked shapes and
// every buffer of the loop. With project, gates hold the input projection
// (plus the folded biases); without, the folded biases only, and whoever runs
// the loop adds the input's part step by step (stack_op.h's wavefront; the
// input then only gives shapes).
struct PreparedForward {
  Mode mode;
  SeqLayout seq;
  LayerDims dims;
  bool train;
  Tensor gates, gates_h, h, c, output, saved_h_prev, saved_extra, h_raw, w_hh, w_hr, bias_hn;
  std::vector<int64_t> out_shape;

  template <typename T>
  ForwardBuffers<T> buffers() const {
    return {w_hh.data_ptr<T>(),           ptr_or_null<T>(w_hr),         ptr_or_null<T>(bias_hn),
            gates.data_ptr<T>(),          ptr_or_null<T>(gates_h),      h.data_ptr<T>(),
            ptr_or_null<T>(c),            output.data_ptr<T>(),         ptr_or_null<T>(saved_h_prev),
            ptr_or_null<T>(saved_extra),  ptr_or_null<T>(h_raw),        train};
  }
};

template <class Backend>
PreparedForward prepare_forward(int64_t mode_id, const Tensor& input,
                                const OptTensor& batch_sizes, const Tensor& hx,
                                const OptTensor& cx, const Tensor& w_ih, const Tensor& w_hh,
                                const OptTensor& b_ih, const OptTensor& b_hh,
                                const OptTensor& w_hr, bool train, bool project) {
  PreparedForward p;
  p.mode = checked_mode(mode_id);
  p.seq = checked_layout(input, batch_sizes);
  p.dims = checked_weights(p.mode, input, w_ih, w_hh, w_hr);
  p.train = train;
  const Mode mode = p.mode;
  const SeqLayout& seq = p.seq;
  const int64_t H = p.dims.hidden, R = p.dims.out, N = seq.rows_total;
  const int64_t GH = w_hh.size(0);
  const bool proj = defined_or_null(w_hr) != nullptr;
  check_state("hx", hx, input, seq.batch, R);
  if (mode == Mode::LSTM) {
    TORCH_CHECK(defined_or_null(cx), "rnnkern: LSTM needs a cell state cx");
    check_state("cx", *cx, input, seq.batch, H);
  }
  for (const OptTensor* b : {&b_ih, &b_hh}) {
    if (const Tensor* bias = defined_or_null(*b)) {
      TORCH_CHECK(bias->dim() == 1 && bias->size(0) == GH, "rnnkern: bias must have shape [",
                  GH, "], got ", bias->sizes());
      TORCH_CHECK(bias->scalar_type() == input.scalar_type() && bias->device() == input.device(),
                  "rnnkern: bias must match the input's dtype and device");
    }
  }

  const auto opts = input.options();
  p.w_hh = w_hh.contiguous();
  p.w_hr = proj ? w_hr->contiguous() : Tensor();
  Tensor bias_x;
  std::tie(bias_x, p.bias_hn) = folded_biases(mode, H, b_ih, b_hh, opts);
  if (project) {
    const Tensor x = input.contiguous().view({N, input.size(-1)});
    p.gates = Backend::input_projection(x, w_ih, bias_x);
  } else {
    p.gates = bias_x.defined() ? bias_x.expand({N, GH}).clone(at::MemoryFormat::Contiguous)
                               : at::zeros({N, GH}, opts);
  }

  p.h = hx.contiguous().clone();
  p.c = mode == Mode::LSTM ? cx->contiguous().clone() : Tensor();
  p.output = at::empty({N, R}, opts);
  p.gates_h = mode == Mode::GRU ? at::empty({seq.batch, GH}, opts) : Tensor();
  p.saved_h_prev = train ? at::empty({N, R}, opts) : Tensor();
  // LSTM c' or GRU h_n per row; a projected LSTM also keeps o * tanh(c).
  if (train && (mode == Mode::LSTM || mode == Mode::GRU)) {
    p.saved_extra = proj ? at::empty({2, N, H}, opts) : at::empty({N, H}, opts);
  }
  p.h_raw = !proj ? Tensor() : (train ? p.saved_extra[1] : at::empty({seq.batch, H}, opts));
  p.out_shape.assign(input.sizes().begin(), input.sizes().end());
  p.out_shape.back() = R;
  return p;
}

// The op's results from a prepared forward whose loop has run.
inline ForwardResult finish_forward(const PreparedForward& p) {
  // Absent outputs are distinct empty tensors: outputs of an op must not alias.
  auto none = [&] { return at::empty({0}, p.output.options()); };
  return {p.output.view(p.out_shape), p.h, p.mode == Mode::LSTM ? p.c : none(),
          p.train ? p.saved_h_prev : none(), p.train ? p.gates : none(),
          p.saved_extra.defined() ? p.saved_extra : none()};
}

template <class Backend>
ForwardResult layer_forward(int64_t mode_id, const Tensor& input, const OptTensor& batch_sizes,
                            const Tensor& hx, const OptTensor& cx, const Tensor& w_ih,
                            const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                            const OptTensor& w_hr, bool reverse, bool train) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const PreparedForward p = prepare_forward<Backend>(mode_id, input, batch_sizes, hx, cx, w_ih,
                                                     w_hh, b_ih, b_hh, w_hr, train, true);
  RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_layer_forward", [&] {
    forward_loop<Backend, scalar_t>(p.dims, p.seq, reverse, p.buffers<scalar_t>());
  });
  // A backend may run the loop later, in order on its stream (a direction of a
  // bidirectional layer waiting for the other): it holds the loop's buffers.
  Backend::hold({p.gates, p.gates_h, p.bias_hn, p.w_hh, p.w_hr, p.h_raw});
  return finish_forward(p);
}

// The time loop of backward: the gradients of the gate pre-activations
// (dgates; the GRU's hidden-side ones apart in dgates_h), of the projected
// output (dh_out, with the projection's input h_raw) and of the initial state.
struct BackwardData {
  Tensor dgates, dgates_h, dh_out, h_raw, dh, dc, h_prev;
};

template <class Backend>
BackwardData backward_data(Mode mode, const SeqLayout& seq, const LayerDims& dims,
                           const Tensor& input, const Tensor& w_hh, const OptTensor& w_hr,
                           const Tensor& output, const Tensor& saved_h_prev,
                           const Tensor& saved_gates, const Tensor& saved_extra,
                           const OptTensor& grad_output, const OptTensor& grad_hy,
                           const OptTensor& grad_cy, bool reverse, int64_t batch) {
  const int64_t H = dims.hidden, R = dims.out, N = seq.rows_total;
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
  Tensor dh = state_grad_buffer(grad_hy, input, seq.batch, R);
  Tensor dc = mode == Mode::LSTM ? state_grad_buffer(grad_cy, input, seq.batch, H) : Tensor();
  Tensor dy;
  if (const Tensor* g = defined_or_null(grad_output)) {
    TORCH_CHECK(g->numel() == N * R, "rnnkern: grad_output has the wrong number of elements");
    dy = g->contiguous();
  }
  Tensor dgates = at::empty({N, GH}, opts);
  Tensor dgates_h = mode == Mode::GRU ? at::empty({N, GH}, opts) : dgates;
  Tensor dh_out = proj ? at::empty({N, R}, opts) : Tensor();
  Tensor dh_raw = proj ? at::empty({seq.batch, H}, opts) : Tensor();
  const Tensor out_c = output.contiguous();
  const Tensor w_hh_c = w_hh.contiguous();
  const Tensor w_hr_c = proj ? w_hr->contiguous() : Tensor();
  const Tensor h_prev = saved_h_prev.contiguous().view({N, R});
  const Tensor gates_c = saved_gates.contiguous();
  const Tensor extra_c =
      !has_extra ? Tensor()
                 : (proj ? saved_extra.contiguous().view({2, N, H})
                         : saved_extra.contiguous().view({N, H}));

  RNNKERN_DISPATCH_TYPES(input.scalar_type(), "rnnkern_layer_backward", [&] {
    BackwardBuffers<scalar_t> buf{w_hh_c.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(w_hr_c),
                                  gates_c.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(extra_c),
                                  h_prev.data_ptr<scalar_t>(),
                                  out_c.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(dy),
                                  dh.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(dc),
                                  dgates.data_ptr<scalar_t>(),
                                  dgates_h.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(dh_out),
                                  ptr_or_null<scalar_t>(dh_raw)};
    backward_loop<Backend, scalar_t>(dims, seq, reverse, buf);
  });

  return {dgates, dgates_h, dh_out, proj ? extra_c[1] : Tensor(), dh, dc, h_prev};
}

#define RNNKERN_BACKWARD_ARGS                                                                 \
  int64_t mode_id, const Tensor &input, const OptTensor &batch_sizes, const Tensor &w_ih,    \
      const Tensor &w_hh, const OptTensor &w_hr, const Tensor &output,                        \
      const Tensor &saved_h_prev, const Tensor &saved_gates, const Tensor &saved_extra,       \
      const OptTensor &grad_output, const OptTensor &grad_hy, const OptTensor &grad_cy,       \
      bool reverse, int64_t batch
#define RNNKERN_BACKWARD_DATA(mode, seq, dims)                                                \
  backward_data<Backend>(mode, seq, dims, input, w_hh, w_hr, output, saved_h_prev,            \
                         saved_gates, saved_extra, grad_output, grad_hy, grad_cy, reverse, batch)

// output_mask: gradients wanted for {input, hx and cx, the weights, the biases}.
template <class Backend>
BackwardResult layer_backward(RNNKERN_BACKWARD_ARGS, std::array<bool, 4> output_mask) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const Mode mode = checked_mode(mode_id);
  const SeqLayout seq = checked_layout(input, batch_sizes);
  const LayerDims dims = checked_weights(mode, input, w_ih, w_hh, w_hr);
  BackwardData d = RNNKERN_BACKWARD_DATA(mode, seq, dims);
  const int64_t N = seq.rows_total;
  // Gradients not asked for are returned as (distinct) empty tensors.
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
    grad_b_hh = mode == Mode::GRU ? Backend::column_sum(d.dgates_h) : grad_b_ih.clone();
  }
  Tensor dc = output_mask[1] && mode == Mode::LSTM ? d.dc : none();
  Tensor dh = output_mask[1] ? d.dh : none();
  return {grad_input, dh, dc, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr};
}

// The time loop's gradients themselves, for weight gradients that are not
// summed over all rows (per-sample gradients under vmap): grad_input (when
// asked for), grad_hx, grad_cx (LSTM), grad_gates [N, G*H], grad_gates_h (the
// GRU's hidden-side ones), grad_h_out [N, R] (projection); absent ones empty.
template <class Backend>
BackwardDataResult layer_backward_data(RNNKERN_BACKWARD_ARGS, bool want_input) {
  const typename Backend::CallScope scope(input, batch_sizes);
  const Mode mode = checked_mode(mode_id);
  const SeqLayout seq = checked_layout(input, batch_sizes);
  const LayerDims dims = checked_weights(mode, input, w_ih, w_hh, w_hr);
  BackwardData d = RNNKERN_BACKWARD_DATA(mode, seq, dims);
  auto none = [&] { return at::empty({0}, input.options()); };
  Tensor grad_input =
      want_input ? Backend::matmul(d.dgates, false, w_ih).view(input.sizes()) : none();
  return {grad_input, d.dh, mode == Mode::LSTM ? d.dc : none(), d.dgates,
          mode == Mode::GRU ? d.dgates_h : none(), d.h_raw.defined() ? d.dh_out : none()};
}

#undef RNNKERN_BACKWARD_DATA
#undef RNNKERN_BACKWARD_ARGS

}  // namespace rnnkern
