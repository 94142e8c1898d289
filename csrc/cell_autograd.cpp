// A cell's training step with its own autograd node, in C++: the op
// cell_train_step (mode, input, hx, cx, weights) -> (hy, cy) that the cell
// modules call in eager mode when something differentiates the step. Forward
// is cell_forward_train, backward cell_backward, asked only for the gradients
// the graph needs. A graph of the backward (create_graph, or forward-AD
// tangents in the incoming gradients) comes from the step recomputed in
// differentiable ATen ops (torch.nn's cell formulas) and differentiated. A
// Python autograd.Function cost a cell step ~25 us more, forward and backward.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "core/cell_math.h"

namespace rnnkern {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kRnnTanh = static_cast<int64_t>(Mode::RNN_TANH);
constexpr int64_t kRnnRelu = static_cast<int64_t>(Mode::RNN_RELU);
constexpr int64_t kLstm = static_cast<int64_t>(Mode::LSTM);

OptTensor present(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// The step in differentiable ATen ops: (hy, cy), cy undefined but for the LSTM.
std::pair<Tensor, Tensor> reference_step(int64_t mode, const Tensor& x, const Tensor& h,
                                         const Tensor& c, const Tensor& w_ih,
                                         const Tensor& w_hh, const Tensor& b_ih,
                                         const Tensor& b_hh) {
  const Tensor gi = at::linear(x, w_ih, present(b_ih));
  const Tensor gh = at::linear(h, w_hh, present(b_hh));
  if (mode == kRnnTanh) return {at::tanh(gi + gh), Tensor()};
  if (mode == kRnnRelu) return {at::relu(gi + gh), Tensor()};
  if (mode == kLstm) {  // gates i, f, g, o
    const std::vector<Tensor> g = (gi + gh).chunk(4, 1);
    const Tensor cy = at::sigmoid(g[1]) * c + at::sigmoid(g[0]) * at::tanh(g[2]);
    return {at::sigmoid(g[3]) * at::tanh(cy), cy};
  }
  // GRU: gates r, z, n; the hidden side of n scaled by r.
  const std::vector<Tensor> a = gi.chunk(3, 1), b = gh.chunk(3, 1);
  const Tensor r = at::sigmoid(a[0] + b[0]), z = at::sigmoid(a[1] + b[1]);
  const Tensor n = at::tanh(a[2] + r * b[2]);
  return {(h - n) * z + n, Tensor()};
}

using CellTrain = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    int64_t, const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
    const OptTensor&, const OptTensor&);
using CellBackward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
    int64_t, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, std::array<bool, 4>);

// Arguments after mode, in the order of forward's (and of the saved list's
// first seven): input, hx, cx, w_ih, w_hh, b_ih, b_hh.
constexpr int kArgs = 7;

struct CellStep : torch::autograd::Function<CellStep> {
  static variable_list forward(AutogradContext* ctx, int64_t mode, const Tensor& input,
                               const Tensor& hx, const OptTensor& cx, const Tensor& w_ih,
                               const Tensor& w_hh, const OptTensor& b_ih,
                               const OptTensor& b_hh) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("rnnkern::cell_forward_train", "")
                               .typed<CellTrain>();
    Tensor hy, cy, gates, extra;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      std::tie(hy, cy, gates, extra) = op.call(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh);
    }
    ctx->saved_data["mode"] = mode;
    ctx->save_for_backward({input, hx, cx.value_or(Tensor()), w_ih, w_hh,
                            b_ih.value_or(Tensor()), b_hh.value_or(Tensor()), gates, extra, hy});
    ctx->set_materialize_grads(false);
    if (mode != kLstm) ctx->mark_non_differentiable({cy});
    return {hy, cy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const variable_list s = ctx->get_saved_variables();
    const Tensor& g_hy = grads[0];
    const Tensor g_cy = mode == kLstm ? grads[1] : Tensor();
    // need[i]: argument i (s[i]) wants a gradient. The node's edges are the
    // tensor arguments given (absent optional ones have none).
    std::array<bool, kArgs> need{};
    for (int i = 0, edge = 0; i < kArgs; ++i) {
      const bool optional = i == 2 || i >= 5;
      if (!optional || s[i].defined()) need[i] = ctx->needs_input_grad(edge++);
    }
    variable_list result(1 + kArgs);  // mode's is always undefined
    if (!g_hy.defined() && !g_cy.defined()) return result;
    const bool tangents = (g_hy.defined() && g_hy._fw_grad(0).defined()) ||
                          (g_cy.defined() && g_cy._fw_grad(0).defined());
    if (at::GradMode::is_enabled() || tangents) {  // a graph of the backward
      at::AutoGradMode grad(true);
      variable_list wrt;
      std::vector<int> where;
      for (int i = 0; i < kArgs; ++i) {
        if (need[i] && s[i].defined()) {
          wrt.push_back(s[i]);
          where.push_back(i);
        }
      }
      if (wrt.empty()) return result;
      const auto [hy, cy] = reference_step(mode, s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
      variable_list outs, gouts;
      if (g_hy.defined()) {
        outs.push_back(hy);
        gouts.push_back(g_hy);
      }
      if (g_cy.defined()) {
        outs.push_back(cy);
        gouts.push_back(g_cy);
      }
      const variable_list found = torch::autograd::grad(outs, wrt, gouts, /*retain_graph=*/true,
                                                        /*create_graph=*/true,
                                                        /*allow_unused=*/true);
      for (size_t k = 0; k < where.size(); ++k) result[1 + where[k]] = found[k];
      return result;
    }
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("rnnkern::cell_backward", "")
                               .typed<CellBackward>();
    const bool bias = s[5].defined() || s[6].defined();
    const std::array<bool, 4> mask{need[0], need[1] || need[2], need[3] || need[4],
                                   bias && (need[5] || need[6])};
    if (!mask[0] && !mask[1] && !mask[2] && !mask[3]) return result;
    const auto found = op.call(mode, s[0], s[1], s[3], s[4], s[7], s[8], s[9], present(g_hy),
                               present(g_cy), mask);
    const Tensor by_arg[kArgs] = {std::get<0>(found), std::get<1>(found), std::get<2>(found),
                                  std::get<3>(found), std::get<4>(found), std::get<5>(found),
                                  std::get<6>(found)};
    for (int i = 0; i < kArgs; ++i) {
      if (need[i]) result[1 + i] = by_arg[i];
    }
    return result;
  }
};

std::tuple<Tensor, Tensor> cell_train_step_autograd(int64_t mode, const Tensor& input,
                                                    const Tensor& hx, const OptTensor& cx,
                                                    const Tensor& w_ih, const Tensor& w_hh,
                                                    const OptTensor& b_ih,
                                                    const OptTensor& b_hh) {
  const variable_list out = CellStep::apply(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  return {out[0], out[1]};
}

// Below autograd (nothing to differentiate): cell_forward_train's h' and c'.
std::tuple<Tensor, Tensor> cell_train_step(int64_t mode, const Tensor& input, const Tensor& hx,
                                           const OptTensor& cx, const Tensor& w_ih,
                                           const Tensor& w_hh, const OptTensor& b_ih,
                                           const OptTensor& b_hh) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("rnnkern::cell_forward_train", "")
                             .typed<CellTrain>();
  const auto r = op.call(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh);
  return {std::get<0>(r), std::get<1>(r)};
}

}  // namespace
}  // namespace rnnkern

TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("cell_train_step", &rnnkern::cell_train_step_autograd);
}

TORCH_LIBRARY_IMPL(rnnkern, CompositeExplicitAutograd, m) {
  m.impl("cell_train_step", &rnnkern::cell_train_step);
}
