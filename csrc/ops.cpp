// The rnnkern operator schemas. Each device registers its kernels in its own
// file (TORCH_LIBRARY_IMPL); importing rnnkern._C runs the registrations.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

// `import rnnkern._C` needs a module init; the ops need nothing from Python.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(rnnkern, m) {
  // One layer-direction of RNN_TANH (0), RNN_RELU (1), LSTM (2) or GRU (3).
  // input: [T, B, I] or, with batch_sizes, packed [rows, I]; w_hr: the LSTM's
  // projection [proj_size, H]. Returns the output ([T, B, R] / [rows, R], R = H
  // or proj_size), h_n and c_n (LSTM; else empty), and the state saved for
  // backward when train is set (else empty).
  m.def(
      "layer_forward(int mode, Tensor input, Tensor? batch_sizes, Tensor hx, Tensor? cx, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, "
      "bool train) -> "
      "(Tensor output, Tensor hy, Tensor cy, Tensor saved_h_prev, Tensor saved_gates, "
      "Tensor saved_extra)");
  // batch: rows of hx. output_mask: {input, hx/cx, weights, biases}; gradients
  // not asked for (and those of absent arguments) are returned as empty tensors.
  m.def(
      "layer_backward(int mode, Tensor input, Tensor? batch_sizes, Tensor w_ih, Tensor w_hh, "
      "Tensor? w_hr, "
      "Tensor output, Tensor saved_h_prev, Tensor saved_gates, Tensor saved_extra, "
      "Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, bool reverse, int batch, "
      "bool[4] output_mask) "
      "-> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
  // The same time loop, returning the gradients of the gate pre-activations
  // [rows, G*H] (the GRU's hidden-side ones apart; the projected LSTM's output
  // gradient [rows, R]) instead of their sums into weight gradients: for
  // per-sample weight gradients. Absent ones are empty tensors.
  m.def(
      "layer_backward_data(int mode, Tensor input, Tensor? batch_sizes, Tensor w_ih, "
      "Tensor w_hh, Tensor? w_hr, Tensor output, Tensor saved_h_prev, Tensor saved_gates, "
      "Tensor saved_extra, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, bool reverse, "
      "int batch, bool want_input) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, "
      "Tensor grad_gates, Tensor grad_gates_h, Tensor grad_h_out)");
  // Both directions of a bidirectional layer, run at once where the backend can
  // (bidirectional_op.h). Per direction, forward: [hx, cx, w_ih, w_hh, b_ih,
  // b_hh, w_hr]; backward: [w_ih, w_hh, w_hr, output, saved_h_prev,
  // saved_gates, saved_extra, grad_output, grad_hy, grad_cy]. Results as the
  // one-direction ops', one list per direction.
  m.def(
      "layer_forward_bidirectional(int mode, Tensor input, Tensor? batch_sizes, "
      "Tensor?[] forward, Tensor?[] reverse, bool train) -> (Tensor[] forward_results, "
      "Tensor[] reverse_results)");
  m.def(
      "layer_backward_bidirectional(int mode, Tensor input, Tensor? batch_sizes, "
      "Tensor?[] forward, Tensor?[] reverse, int batch, bool[4] output_mask) -> "
      "(Tensor[] forward_grads, Tensor[] reverse_grads)");
  // All layers and directions of a module (core/stack_op.h), with dropout
  // between layers (p = dropout; 0 when the module is not training). weights:
  // per layer-direction [w_ih, w_hh, b_ih, b_hh, w_hr]; hx, cx: [layers *
  // directions, B, size]. With train, `saved` holds what stack_backward needs
  // besides the forward's arguments and output.
  m.def(
      "stack_forward(int mode, Tensor input, Tensor? batch_sizes, Tensor hx, Tensor? cx, "
      "Tensor?[] weights, int num_layers, bool bidirectional, float dropout, bool train) -> "
      "(Tensor output, Tensor h_n, Tensor c_n, Tensor[] saved)");
  m.def(
      "stack_backward(int mode, Tensor input, Tensor? batch_sizes, Tensor?[] weights, "
      "Tensor output, Tensor[] saved, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, "
      "int num_layers, bool bidirectional, float dropout, int batch, bool[4] output_mask) -> "
      "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor[] grad_weights)");
  // One step of a cell for inference (core/cell_op.h): input [B, I], hx and
  // cx (LSTM) [B, H]; returns h' and c' (empty except for the LSTM). Nothing is
  // saved for backward: it refuses inputs that require grad under grad mode.
  m.def(
      "cell_forward(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh) -> (Tensor hy, Tensor cy)");
  // A training step of a cell: also the state its backward needs (the
  // activated gates [B, G*H]; the LSTM's c and the GRU's h_n [B, H], else empty).
  m.def(
      "cell_forward_train(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor hy, Tensor cy, Tensor saved_gates, "
      "Tensor saved_extra)");
  // The same step as an autograd node (cell_autograd.cpp): h' and c',
  // differentiable; its backward is cell_backward.
  m.def(
      "cell_train_step(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor hy, Tensor cy)");
  // Its backward. output_mask: {input, hx/cx, weights, biases}; gradients not
  // asked for are empty tensors.
  m.def(
      "cell_backward(int mode, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor saved_gates, Tensor saved_extra, Tensor hy, Tensor? grad_hy, Tensor? grad_cy, "
      "bool[4] output_mask) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, "
      "Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
}

namespace {

using OptTensor = std::optional<at::Tensor>;

// cell_forward's Autograd kernel: there is no derivative, so differentiating
// it is an error rather than a result without a graph.
std::tuple<at::Tensor, at::Tensor> cell_forward_autograd(
    int64_t mode, const at::Tensor& input, const at::Tensor& hx, const OptTensor& cx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh) {
  if (at::GradMode::is_enabled()) {
    for (const OptTensor& t : {OptTensor(input), OptTensor(hx), cx, OptTensor(w_ih),
                               OptTensor(w_hh), b_ih, b_hh}) {
      TORCH_CHECK(!(t.has_value() && t->defined() && t->requires_grad()),
                  "rnnkern: cell_forward saves nothing for backward; differentiate through the "
                  "cell modules or layer_forward");
    }
  }
  at::AutoDispatchBelowADInplaceOrView below;
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkern::cell_forward", "")
                             .typed<decltype(cell_forward_autograd)>();
  return op.call(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh);
}

// The Autograd kernel of the training cell ops and the whole-stack ops: their
// derivative is an autograd.Function's (rnnkern/cells.py, rnnkern/_stack.py),
// which calls each once per step or per module call; in Python this check cost
// 5-10 us a call. Differentiating the ops themselves (grad mode on and an
// argument that requires grad, or one with a forward-AD tangent) is an error,
// not a result without a graph.
void not_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                        torch::jit::Stack* stack) {
  const std::string& name = op.schema().name();
  const char* instead = name.find("stack_") != std::string::npos ? "rnnkern.functional.rnn_stack"
                                                                  : "the cell modules";
  const bool grad = at::GradMode::is_enabled();
  auto check = [&](const c10::IValue& v) {
    if (!v.isTensor() || !v.toTensor().defined()) return;
    const at::Tensor& t = v.toTensor();
    TORCH_CHECK(!(grad && t.requires_grad()) && !t._fw_grad(/*level=*/0).defined(),
                name, " is not differentiable: differentiate ", instead,
                " instead (its backward gives a differentiable gradient when a graph is "
                "requested)");
  };
  const size_t args = op.schema().arguments().size();
  for (size_t i = stack->size() - args; i < stack->size(); ++i) {
    const c10::IValue& v = (*stack)[i];
    if (v.isList()) {  // the stack ops' weights and saved state
      for (const c10::IValue& e : v.toListRef()) check(e);
    } else {
      check(v);
    }
  }
  at::AutoDispatchBelowADInplaceOrView below;
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("cell_forward", &cell_forward_autograd);
  m.impl("cell_forward_train", torch::CppFunction::makeFromBoxedFunction<&not_differentiable>());
  m.impl("cell_backward", torch::CppFunction::makeFromBoxedFunction<&not_differentiable>());
  m.impl("stack_forward", torch::CppFunction::makeFromBoxedFunction<&not_differentiable>());
  m.impl("stack_backward", torch::CppFunction::makeFromBoxedFunction<&not_differentiable>());
}
