// The time loop of one layer-direction, forward and backward, for every mode,
// dense or packed, with or without an LSTM projection. Device-agnostic: a
// Backend supplies
//   gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)   (row-major)
//   copy(dst, src, n), add(dst, a, b_or_null, n)
//   forward_step(ForwardStep<T>) / backward_step(BackwardStep<T>)
//   forward_sequence(dims, seq, reverse, ForwardBuffers<T>) / backward_sequence(...):
//     the whole loop by another algorithm where the backend has one for the
//     shape (true), else false and the generic loop below runs
// Nothing is allocated here; all buffers come from the caller (layer_op.h).
//
// Sizes: H = hidden size (gates, c), R = size of h (H, or proj_size for a
// projected LSTM), G = gate_count(mode), N = rows of the whole sequence,
// B = rows of the first step.
#pragma once

#include "sequence.h"
#include "step_args.h"

namespace rnnkern {

struct LayerDims {
  Mode mode;
  int64_t hidden;  // H
  int64_t out;     // R
};

template <typename T>
struct ForwardBuffers {
  const T* w_hh;       // [G*H, R]
  const T* w_hr;       // projected LSTM: [R, H], else null
  const T* bias_hn;    // GRU: [H] or null
  T* gates;            // [N, G*H] input projection (+ folded biases) in, activations out
  T* gates_h;          // GRU: [B, 3H] scratch for the recurrent GEMM
  T* h;                // [B, R] state, h0 in, h_n out
  T* c;                // LSTM: [B, H] state
  T* output;           // [N, R]
  T* saved_h_prev;     // [N, R] or null (inference)
  T* saved_extra;      // [N, H] or null: LSTM c', GRU h_n
  T* h_raw;            // projected LSTM: o * tanh(c) before the projection;
                       // [N, H] when saved for backward, else [B, H] scratch
  bool h_raw_saved;
};

// One layer of a stack whose layers run at once, each a step behind the one
// below (Backend::stack_wavefront): its loop's buffers, with gates holding the
// folded biases only, and its input, whose part of the gates the loop adds
// each step once the layer below has written that step: input [N, I] (the
// layer below's output), times noise [N, I] into dropped when there is dropout
// (both null without).
template <typename T>
struct WavefrontLayer {
  LayerDims dims;
  ForwardBuffers<T> buf;
  const T* w_ih;  // [G*H, I]
  int64_t input_size;
  const T* input;
  const T* noise;
  T* dropped;
};

// The generic loop: per step the backend's GEMM and pointwise step.
template <class Backend, typename T>
void forward_steps(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                   const ForwardBuffers<T>& buf) {
  const int64_t H = dims.hidden, R = dims.out;
  const int64_t GH = gate_count(dims.mode) * H;
  const bool gru = dims.mode == Mode::GRU;
  const bool proj = buf.w_hr != nullptr;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = reverse ? seq.steps - 1 - s : s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    const T* h_prev = buf.h;
    if (buf.saved_h_prev != nullptr) {
      // Saved for backward; the GEMM reads the copy so it stays in cache.
      Backend::copy(buf.saved_h_prev + off * R, buf.h, rows * R);
      h_prev = buf.saved_h_prev + off * R;
    }
    T* gates = buf.gates + off * GH;
    // gates (+)= h' W_hh^T; GRU keeps the hidden side apart because r scales
    // only its n part.
    Backend::gemm(false, true, rows, GH, R, T(1), h_prev, R, buf.w_hh, R, gru ? T(0) : T(1),
                  gru ? buf.gates_h : gates, GH);
    T* out = buf.output + off * R;
    T* h_raw = proj ? buf.h_raw + (buf.h_raw_saved ? off * H : 0) : nullptr;
    ForwardStep<T> step{dims.mode, rows, H, gates, buf.gates_h, buf.bias_hn,
                        proj ? h_raw : buf.h, buf.c, proj ? h_raw : out,
                        buf.saved_extra ? buf.saved_extra + off * H : nullptr};
    Backend::forward_step(step);
    if (proj) {  // h = (o * tanh(c)) W_hr^T
      Backend::gemm(false, true, rows, R, H, T(1), h_raw, H, buf.w_hr, H, T(0), out, R);
      Backend::copy(buf.h, out, rows * R);
    }
  }
}

template <class Backend, typename T>
void forward_loop(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                  const ForwardBuffers<T>& buf) {
  if (!Backend::forward_sequence(dims, seq, reverse, buf)) {
    forward_steps<Backend, T>(dims, seq, reverse, buf);
  }
}

template <typename T>
struct BackwardBuffers {
  const T* w_hh;          // [G*H, R]
  const T* w_hr;          // projected LSTM: [R, H], else null
  const T* gates;         // [N, G*H] saved activations
  const T* extra;         // [N, H] saved c' / h_n, or null (RNN)
  const T* h_prev;        // [N, R] saved h'
  const T* output;        // [N, R]
  const T* grad_output;   // [N, R] or null
  T* dh;                  // [B, R] state: grad of h_n in, grad of h0 out
  T* dc;                  // LSTM: [B, H] state: grad of c_n in, grad of c0 out
  T* dgates;              // [N, G*H] out
  T* dgates_h;            // [N, G*H] out (GRU); equal to dgates otherwise
  T* dh_out;              // projected LSTM: [N, R] out, the total gradient of each h
  T* dh_raw;              // projected LSTM: [B, H] scratch
};

// One layer of a stack whose layers' backward loops run at once, each a step
// behind the one above (Backend::stack_wavefront_backward): its loop's buffers
// and, for layers above the first, its input's gradient, which it writes each
// step into the grad_output of the layer below once it has that step's dgates:
// below [N, I] = (dgates W_ih) * noise (the dropout's, null without).
template <typename T>
struct WavefrontBackwardLayer {
  LayerDims dims;
  BackwardBuffers<T> buf;
  const T* w_ih;  // [G*H, I]
  int64_t input_size;
  const T* noise;
  T* below;  // null for the first layer
};

// The generic backward loop: per step the backend's pointwise step and GEMMs.
template <class Backend, typename T>
void backward_steps(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                    const BackwardBuffers<T>& buf) {
  const int64_t H = dims.hidden, R = dims.out;
  const int64_t GH = gate_count(dims.mode) * H;
  const bool gru = dims.mode == Mode::GRU;
  const bool proj = buf.w_hr != nullptr;
  for (int64_t s = 0; s < seq.steps; ++s) {
    // Walk the steps in the opposite order of the forward pass.
    const int64_t t = reverse ? s : seq.steps - 1 - s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    const T* grad_out = buf.grad_output ? buf.grad_output + off * R : nullptr;
    T* dh = buf.dh;
    if (proj) {  // back through h = h_raw W_hr^T first
      T* dh_total = buf.dh_out + off * R;
      Backend::add(dh_total, buf.dh, grad_out, rows * R);
      Backend::gemm(false, false, rows, H, R, T(1), dh_total, R, buf.w_hr, H, T(0), buf.dh_raw, H);
      dh = buf.dh_raw;
      grad_out = nullptr;
    }
    BackwardStep<T> step{dims.mode,
                         rows,
                         H,
                         buf.gates + off * GH,
                         buf.extra ? buf.extra + off * H : nullptr,
                         buf.h_prev + off * R,
                         buf.output + off * R,
                         grad_out,
                         dh,
                         buf.dc,
                         buf.dgates + off * GH,
                         buf.dgates_h + off * GH};
    Backend::backward_step(step);
    // dh' = dgates_h W_hh (+ the direct part the GRU step left in dh).
    Backend::gemm(false, false, rows, R, GH, T(1), buf.dgates_h + off * GH, GH, buf.w_hh, R,
                  gru ? T(1) : T(0), buf.dh, R);
  }
}

template <class Backend, typename T>
void backward_loop(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                   const BackwardBuffers<T>& buf) {
  if (!Backend::backward_sequence(dims, seq, reverse, buf)) {
    backward_steps<Backend, T>(dims, seq, reverse, buf);
  }
}

}  // namespace rnnkern
