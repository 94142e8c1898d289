// Per-element math of each recurrent cell, forward and backward.
//
// The one place where the cells' equations live (torch.nn's definitions):
//   RNN:  h = act(x W_ih^T + b_ih + h' W_hh^T + b_hh),  act = tanh | relu
//   LSTM: i,f,g,o = sigmoid, sigmoid, tanh, sigmoid of the gate pre-activations
//         c = f * c' + i * g,  h = o * tanh(c)
//   GRU:  r = sigmoid(x_r + h_r),  z = sigmoid(x_z + h_z)
//         n = tanh(x_n + r * h_n),  h = n + z * (h' - n)
// where x_* include b_ih (and for r, z also b_hh) and h_n = h' W_hn^T + b_hn.
// Called per element by the CPU loops and by the CUDA kernels alike; no loops,
// no memory layout here. T is the arithmetic type (float for half/bfloat16).
#pragma once

#include "fast_math.h"
#include "macros.h"

namespace rnnkern {

enum class Mode : int64_t { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3 };

RK_HD_INLINE int64_t gate_count(Mode mode) {
  return mode == Mode::LSTM ? 4 : (mode == Mode::GRU ? 3 : 1);
}

namespace cell {

// ---- RNN ------------------------------------------------------------------

template <typename T>
RK_HD_INLINE T rnn_tanh_forward(T pre) {
  return fm::tanh(pre);
}

template <typename T>
RK_HD_INLINE T rnn_tanh_backward(T h, T dh) {  // returns d(pre)
  return dh * (T(1) - h * h);
}

template <typename T>
RK_HD_INLINE T rnn_relu_forward(T pre) {
  return pre < T(0) ? T(0) : pre;  // NaN propagates, as in torch.relu
}

template <typename T>
RK_HD_INLINE T rnn_relu_backward(T h, T dh) {
  return h > T(0) ? dh : T(0);
}

// ---- LSTM -----------------------------------------------------------------

// In: gate pre-activations i, f, g, o and c'. Out: the activated gates (in
// place), c and h.
template <typename T>
RK_HD_INLINE void lstm_forward(T& i, T& f, T& g, T& o, T c_prev, T& c, T& h) {
  i = fm::sigmoid(i);
  f = fm::sigmoid(f);
  g = fm::tanh(g);
  o = fm::sigmoid(o);
  c = f * c_prev + i * g;
  h = o * fm::tanh(c);
}

// In: activated gates, c', the gradients dh (of h) and dc (of c, from the
// next step). Out: gradients of the four pre-activations and of c'.
template <typename T>
RK_HD_INLINE void lstm_backward(T i, T f, T g, T o, T c_prev, T dh, T dc,
                                T& di, T& df, T& dg, T& d_o, T& dc_prev) {
  const T tanh_c = fm::tanh(f * c_prev + i * g);
  dc = dc + dh * o * (T(1) - tanh_c * tanh_c);
  d_o = dh * tanh_c * o * (T(1) - o);
  di = dc * g * i * (T(1) - i);
  df = dc * c_prev * f * (T(1) - f);
  dg = dc * i * (T(1) - g * g);
  dc_prev = dc * f;
}

// ---- GRU ------------------------------------------------------------------

// In: input-side pre-activations x_r, x_z, x_n, hidden-side h_r, h_z, h_n
// (h_n already including b_hn) and h'. Out: r, z, n and h.
template <typename T>
RK_HD_INLINE void gru_forward(T x_r, T x_z, T x_n, T h_r, T h_z, T h_n, T h_prev,
                              T& r, T& z, T& n, T& h) {
  r = fm::sigmoid(x_r + h_r);
  z = fm::sigmoid(x_z + h_z);
  n = fm::tanh(x_n + r * h_n);
  h = n + z * (h_prev - n);
}

// In: r, z, n, h_n, h' and dh. Out: gradients of the pre-activations of r and
// z (shared by both sides), of x_n, of h_n, and the direct part of dh'
// (the part through W_hh comes from the GEMM).
template <typename T>
RK_HD_INLINE void gru_backward(T r, T z, T n, T h_n, T h_prev, T dh,
                               T& dr, T& dz, T& dx_n, T& dh_n, T& dh_prev_direct) {
  const T dn = dh * (T(1) - z);
  dx_n = dn * (T(1) - n * n);
  dh_n = dx_n * r;
  dr = dx_n * h_n * r * (T(1) - r);
  dz = dh * (h_prev - n) * z * (T(1) - z);
  dh_prev_direct = dh * z;
}

}  // namespace cell
}  // namespace rnnkern
