// The backend of the persistent kernels (the CUDA backend and its CPU
// emulation derive from it with their Device): which algorithm runs a
// layer, a bidirectional layer's two directions, a stack.
#pragma once

#include <initializer_list>
#include <vector>

#include "../core/driver.h"
#include "../core/generic_backend.h"
#include "persistent_launch.h"
#include "wavefront_launch.h"

namespace rnnkern {
namespace cuda {

// What a backend running the persistent kernels shares (the CUDA backend and
// its CPU emulation): they as its whole-sequence algorithm, the generic
// per-step loop (of Self) otherwise and as the fallback of a waiting launch,
// the two directions of a bidirectional layer one after the other, their
// forward kernels, and their backward loops, merged into one grid where they
// fit side by side, and stacked one-direction layers as a wavefront
// (wavefront_launch.h).
template <class Self, class Device>
struct PersistentBackend : GenericLoopBackend {
  template <typename T>
  static bool forward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                               const ForwardBuffers<T>& buf) {
    return persistent_forward<Device>(dims, seq, reverse, buf, [dims, seq, reverse, buf] {
      forward_steps<Self, T>(dims, seq, reverse, buf);
    });
  }
  template <typename T>
  static bool backward_sequence(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                                const BackwardBuffers<T>& buf) {
    return persistent_backward<Device>(dims, seq, reverse, buf, [dims, seq, reverse, buf] {
      backward_steps<Self, T>(dims, seq, reverse, buf);
    });
  }
  template <typename T>
  static bool wavefront_applies(const LayerDims& dims, const SeqLayout& seq, int64_t layers,
                                int64_t) {
    return plan_wavefront<Device, T>(false, dims, seq, layers).use;
  }
  template <typename T>
  static void stack_wavefront(const std::vector<WavefrontLayer<T>>& layers,
                              const SeqLayout& seq) {
    if (!persistent_wavefront<Device, T>(layers, seq)) layers_forward<Self, Device, T>(layers, seq);
  }
  template <typename T>
  static void stack_wavefront_backward(const std::vector<WavefrontBackwardLayer<T>>& layers,
                                       const SeqLayout& seq) {
    if (!persistent_wavefront_backward<Device, T>(layers, seq)) {
      layers_backward<Self, Device, T>(layers, seq);
    }
  }
  static void hold(std::initializer_list<at::Tensor> buffers) { hold_for_pair(buffers); }
  template <typename F>
  static void both_directions(const F& body) {
    PairedScope pair;
    body(0);
    body(1);
    pair.close();
  }
  // The two loops paired, then the gradients that need them.
  template <typename Loop, typename Finish>
  static void both_directions_backward(const Loop& loop, const Finish& finish) {
    both_directions(loop);
    finish(0);
    finish(1);
  }
};

}  // namespace cuda
}  // namespace rnnkern
