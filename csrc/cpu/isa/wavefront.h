// Stacked one-direction layers of a small batch run at once, as a wavefront:
// thread l runs layer l's whole loop on its core, with all of that layer's
// weights resident there, a step behind layer l-1. Before its step s a layer
// waits until the layer below has published that step, then adds x_s W_ih^T
// to its gates from its own transposed W_ih (x_s: the lower layer's output
// rows of step s, times the dropout noise, kept for backward). Against the
// layers one after another, each split over the cores, this trades the
// split's per-step barrier and the input projection's GEMM for a second
// matrix-vector product per step and a one-step lag: it pays where a layer
// gains little from a second core (small hidden sizes). The backward runs the
// other way: a layer a step behind the one above, whose gate gradients of a
// step give the layer's output gradient of that step (times W_ih, times the
// dropout noise), written by the layer above as soon as it has them.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

// Until `counter` has published more than s steps.
void wait_for_step(const PhaseCounter& counter, int64_t s) {
  int64_t spins = 0;
  while (counter.done.load(std::memory_order_acquire) <= s) {
    spin_pause();
    if (++spins % 4096 == 0) std::this_thread::yield();
  }
}

void wavefront_layer(const WavefrontLayer<float>& layer, int64_t l, const SeqLayout& seq,
                     PhaseCounter* progress, PhaseCounter* barrier) {
  const LayerDims& dims = layer.dims;
  const int64_t H = dims.hidden, R = dims.out, G = gate_count(dims.mode), GH = G * H;
  const int64_t B = seq.batch, I = layer.input_size;
  float* next = thread_scratch(2, B * R);
  ResidentLayout in_layout{};
  float* resident_in = nullptr;
  if (l > 0) {
    in_layout = resident_layout(I, H, G, B);
    resident_in = thread_scratch(5, in_layout.size());
    pack_resident(layer.w_ih, H, 0, in_layout, resident_in);
  }
  auto input_step = [&](int64_t s, int64_t rows, int64_t off) {
    progress[l].done.store(s, std::memory_order_release);  // steps before s are written
    if (l == 0) return;
    wait_for_step(progress[l - 1], s);
    const float* x = layer.input + off * I;
    if (layer.noise != nullptr) {
      float* dropped = layer.dropped + off * I;
      const float* noise = layer.noise + off * I;
#pragma omp simd
      for (int64_t i = 0; i < rows * I; ++i) dropped[i] = x[i] * noise[i];
      x = dropped;
    }
    resident_product(rows, x, I, resident_in, in_layout, layer.buf.gates + off * GH, GH, H,
                     /*accumulate=*/true);
  };
  dispatch_mode(dims.mode, [&](auto mode) {
    forward_thread<decltype(mode)::value>(dims, seq, /*reverse=*/false, layer.buf, next,
                                          Share{UnitRange{0, H}, SpinBarrier(barrier, 1), 0, 1},
                                          input_step);
  });
  if (seq.steps % 2 == 1) std::memcpy(layer.buf.h, next, B * R * sizeof(float));
  progress[l].done.store(seq.steps, std::memory_order_release);
}

// The output gradient of the layer below `layer` in the step of rows from off:
// (dgates W_ih) * noise.
void gradient_below(const WavefrontBackwardLayer<float>& layer, int64_t rows, int64_t off) {
  const int64_t GH = gate_count(layer.dims.mode) * layer.dims.hidden, I = layer.input_size;
  float* below = layer.below + off * I;
  axpy_rows(rows, 0, I, GH, 1.f, layer.buf.dgates + off * GH, GH, layer.w_ih, I, 0.f, below, I);
  if (layer.noise != nullptr) {
    const float* noise = layer.noise + off * I;
#pragma omp simd
    for (int64_t i = 0; i < rows * I; ++i) below[i] *= noise[i];
  }
}

// Layer l of `count` in backward, on one thread. The output gradient that a
// layer hands the one below is a product as large as its own step's (dgates
// W_ih beside dgates_h W_hh): it computes it in even steps, the layer below
// (once it has this layer's dgates of the step) in odd ones, so that each
// thread has one and a half products a step rather than two and one.
void wavefront_backward_layer(const WavefrontBackwardLayer<float>* layers, int64_t l,
                              int64_t count, const SeqLayout& seq, PhaseCounter* progress,
                              PhaseCounter* barrier) {
  struct Hooks {
    const WavefrontBackwardLayer<float>* layers;
    PhaseCounter* progress;
    int64_t l, count;
    void before(int64_t s, int64_t rows, int64_t off) const {
      if (l + 1 == count) return;
      wait_for_step(progress[l + 1], s);  // the layer above's dgates of this step
      if (s % 2 == 1) gradient_below(layers[l + 1], rows, off);
    }
    void after_gates(int64_t s, int64_t rows, int64_t off) const {
      if (l > 0 && s % 2 == 0) gradient_below(layers[l], rows, off);
      progress[l].done.store(s + 1, std::memory_order_release);
    }
  };
  const Hooks hooks{layers, progress, l, count};
  const WavefrontBackwardLayer<float>& layer = layers[l];
  dispatch_mode(layer.dims.mode, [&](auto mode) {
    backward_thread<decltype(mode)::value>(layer.dims, seq, /*reverse=*/false, layer.buf,
                                           Share{UnitRange{0, layer.dims.hidden},
                                                 SpinBarrier(barrier, 1), 0, 1},
                                           hooks);
  });
}

template <typename T>
void small_batch_wavefront_backward(const WavefrontBackwardLayer<T>* layers, int64_t count,
                                    const SeqLayout& seq) {
  if constexpr (std::is_same<T, float>::value) {
    std::vector<PhaseCounter> progress(count), barriers(count);
#pragma omp parallel num_threads(count)
    {
      // Top layer first; with fewer threads than layers a thread runs its
      // layers from the top down, and a layer only waits for a higher one.
      const int64_t n = omp_get_num_threads(), tid = omp_get_thread_num();
      for (int64_t l = count - 1 - tid; l >= 0; l -= n) {
        wavefront_backward_layer(layers, l, count, seq, progress.data(), barriers.data() + l);
      }
    }
  }
}

// The caller (the CPU backend's stack_wavefront) has checked the shapes: float,
// at most kSmallGemmMaxRows rows, no projection, enough steps for resident weights.
template <typename T>
void small_batch_wavefront(const WavefrontLayer<T>* layers, int64_t count, const SeqLayout& seq) {
  if constexpr (std::is_same<T, float>::value) {
    std::vector<PhaseCounter> progress(count), barriers(count);
#pragma omp parallel num_threads(count)
    {
      // With fewer threads than layers, a thread runs its layers in order; a
      // layer only ever waits for a lower one, so this cannot deadlock.
      const int64_t n = omp_get_num_threads(), tid = omp_get_thread_num();
      for (int64_t l = tid; l < count; l += n) {
        wavefront_layer(layers[l], l, seq, progress.data(), barriers.data() + l);
      }
    }
  }
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
