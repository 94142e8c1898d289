// The tensor-level ops of one layer-direction, shared by every device
// (a Backend as in driver.h, plus column_sum(Tensor [rows, cols]) -> [cols] and
// input_projection(x [N, I], w_ih [GH, I], bias [GH] or undefined) -> [N, GH], and
// matmul(a, trans_a, b) -> op(a) b, and a CallScope(input, batch_sizes) type held
// for the whole op call: the device guard, or the CPU's weight-packing scope):
// argument checks, buffer allocation, the input projection (one GEMM for all
// steps) and the time loop (driver.h); the backward is layer_backward.h's.
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

}  // namespace rnnkern
