// The time loop of one layer-direction, forward and backward, for every mode,
// dense or packed. Device-agnostic: a Backend supplies
//   gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)   (row-major)
//   copy(dst, src, n)
//   forward_step(ForwardStep<T>) / backward_step(BackwardStep<T>)
// Nothing is allocated here; all buffers come from the caller (layer_op.h).
#pragma once

#include "sequence.h"
#include "step_args.h"

namespace rnnkern {

template <typename T>
struct ForwardBuffers {
  const T* w_hh;       // [G*H, H]
  const T* bias_hn;    // GRU: [H] or null
  T* gates;            // [N, G*H] input projection (+ folded biases) in, activations out
  T* gates_h;          // GRU: [B, 3H] scratch for the recurrent GEMM
  T* h;                // [B, H] state, h0 in, h_n out
  T* c;                // LSTM: [B, H] state
  T* output;           // [N, H]
  T* saved_h_prev;     // [N, H] or null (inference)
  T* saved_extra;      // [N, H] or null
};

template <class Backend, typename T>
void forward_loop(Mode mode, const SeqLayout& seq, int64_t H, bool reverse,
                  const ForwardBuffers<T>& buf) {
  const int64_t GH = gate_count(mode) * H;
  const bool gru = mode == Mode::GRU;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = reverse ? seq.steps - 1 - s : s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    const T* h_prev = buf.h;
    if (buf.saved_h_prev != nullptr) {
      // Saved for backward; the GEMM reads the copy so it stays in cache.
      Backend::copy(buf.saved_h_prev + off * H, buf.h, rows * H);
      h_prev = buf.saved_h_prev + off * H;
    }
    T* gates = buf.gates + off * GH;
    // gates (+)= h' W_hh^T; GRU keeps the hidden side apart because r scales
    // only its n part.
    Backend::gemm(false, true, rows, GH, H, T(1), h_prev, H, buf.w_hh, H,
                  gru ? T(0) : T(1), gru ? buf.gates_h : gates, GH);
    ForwardStep<T> step{mode,   rows,        H,           gates,
                        buf.gates_h, buf.bias_hn, buf.h,  buf.c,
                        buf.output + off * H,
                        buf.saved_extra ? buf.saved_extra + off * H : nullptr};
    Backend::forward_step(step);
  }
}

template <typename T>
struct BackwardBuffers {
  const T* w_hh;          // [G*H, H]
  const T* gates;         // [N, G*H] saved activations
  const T* extra;         // [N, H] saved c' / h_n, or null (RNN)
  const T* h_prev;        // [N, H] saved h'
  const T* output;        // [N, H]
  const T* grad_output;   // [N, H] or null
  T* dh;                  // [B, H] state: grad of h_n in, grad of h0 out
  T* dc;                  // LSTM: [B, H] state: grad of c_n in, grad of c0 out
  T* dgates;              // [N, G*H] out
  T* dgates_h;            // [N, G*H] out (GRU); equal to dgates otherwise
};

template <class Backend, typename T>
void backward_loop(Mode mode, const SeqLayout& seq, int64_t H, bool reverse,
                   const BackwardBuffers<T>& buf) {
  const int64_t GH = gate_count(mode) * H;
  const bool gru = mode == Mode::GRU;
  for (int64_t s = 0; s < seq.steps; ++s) {
    // Walk the steps in the opposite order of the forward pass.
    const int64_t t = reverse ? s : seq.steps - 1 - s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    BackwardStep<T> step{mode,
                         rows,
                         H,
                         buf.gates + off * GH,
                         buf.extra ? buf.extra + off * H : nullptr,
                         buf.h_prev + off * H,
                         buf.output + off * H,
                         buf.grad_output ? buf.grad_output + off * H : nullptr,
                         buf.dh,
                         buf.dc,
                         buf.dgates + off * GH,
                         buf.dgates_h + off * GH};
    Backend::backward_step(step);
    // dh' = dgates_h W_hh (+ the direct part the GRU step left in dh).
    Backend::gemm(false, false, rows, H, GH, T(1), buf.dgates_h + off * GH, GH,
                  buf.w_hh, H, gru ? T(1) : T(0), buf.dh, H);
  }
}

}  // namespace rnnkern
