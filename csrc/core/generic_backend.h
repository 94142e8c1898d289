// What a backend with a single algorithm per op shares (the CUDA backend today,
// and its CPU emulation): the input projection and the gradients' products
// through ATen, and no
// whole-sequence path of its own, so driver.h runs its generic loop.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>

#include <initializer_list>
#include <optional>
#include <vector>

#include "driver.h"
#include "sequence.h"

namespace rnnkern {

struct GenericLoopBackend {
  struct CallScope {  // nothing to hold for the call
    CallScope(const at::Tensor&, const std::optional<at::Tensor>&) {}
  };
  static at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih,
                                     const at::Tensor& bias) {
    return bias.defined() ? at::addmm(bias, x, w_ih.t()) : at::mm(x, w_ih.t());
  }
  // op(A) B, for the weight and input gradients.
  static at::Tensor matmul(const at::Tensor& a, bool trans_a, const at::Tensor& b) {
    return at::mm(trans_a ? a.t() : a, b);
  }
  template <typename Buffers>
  static bool forward_sequence(const LayerDims&, const SeqLayout&, bool, const Buffers&) {
    return false;
  }
  template <typename Buffers>
  static bool backward_sequence(const LayerDims&, const SeqLayout&, bool, const Buffers&) {
    return false;
  }
  // No wavefront of stacked layers (stack_op.h): they run one after another.
  template <typename T>
  static bool wavefront_applies(const LayerDims&, const SeqLayout&, int64_t, int64_t) {
    return false;
  }
  template <typename T>
  static void stack_wavefront(const std::vector<WavefrontLayer<T>>&, const SeqLayout&) {}
  template <typename T>
  static void stack_wavefront_backward(const std::vector<WavefrontBackwardLayer<T>>&,
                                       const SeqLayout&) {}
  // Buffers of a layer op's loop, for a loop that runs after the op returns.
  static void hold(std::initializer_list<at::Tensor>) {}
  // The two directions of a bidirectional layer: one after the other.
  template <typename F>
  static void both_directions(const F& body) {
    body(0);
    body(1);
  }
  // The backward of a bidirectional layer's two directions: loop(d) runs a
  // direction's time loop, finish(d) then its gradients over all steps.
  template <typename Loop, typename Finish>
  static void both_directions_backward(const Loop& loop, const Finish& finish) {
    both_directions([&](int d) {
      loop(d);
      finish(d);
    });
  }
  // Two independent tasks, body(0) and body(1): one after the other.
  template <typename F>
  static void concurrently(const F& body) {
    body(0);
    body(1);
  }
};

}  // namespace rnnkern
