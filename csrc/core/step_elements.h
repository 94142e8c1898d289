// One element (row b, hidden unit j) of a fused pointwise step: where its
// values live in the step's buffers (step_args.h), and the cell math applied
// to them (cell_math.h). The CPU loops and the CUDA kernels both call these,
// so the memory layout of a step, like the math, is written once.
// The mode is a template parameter so that the per-element code has no
// branches on it; dispatch_mode() turns the runtime mode into it.
#pragma once

#include <ATen/OpMathType.h>

#include <type_traits>

#include "cell_math.h"
#include "step_args.h"

namespace rnnkern {

template <Mode M>
using ModeConstant = std::integral_constant<Mode, M>;

// Calls fn(ModeConstant<mode>{}). Host code only (loops and kernel launches).
template <typename F>
inline void dispatch_mode(Mode mode, const F& fn) {
  switch (mode) {
    case Mode::RNN_TANH: fn(ModeConstant<Mode::RNN_TANH>{}); break;
    case Mode::RNN_RELU: fn(ModeConstant<Mode::RNN_RELU>{}); break;
    case Mode::LSTM: fn(ModeConstant<Mode::LSTM>{}); break;
    case Mode::GRU: fn(ModeConstant<Mode::GRU>{}); break;
  }
}

template <Mode M, typename T>
RK_HD_INLINE void forward_element(const ForwardStep<T>& s, int64_t b, int64_t j) {
  using A = at::opmath_type<T>;
  const int64_t H = s.hidden;
  const int64_t e = b * H + j;
  T* g = s.gates + b * gate_count(M) * H;
  if constexpr (M == Mode::RNN_TANH || M == Mode::RNN_RELU) {
    const A pre = A(g[j]);
    const T v = T(M == Mode::RNN_RELU ? cell::rnn_relu_forward(pre) : cell::rnn_tanh_forward(pre));
    s.h[e] = v;
    s.out[e] = v;
  } else if constexpr (M == Mode::LSTM) {
    A i = A(g[j]), f = A(g[H + j]), gc = A(g[2 * H + j]), o = A(g[3 * H + j]), c, h;
    const T c_prev = s.c[e];
    if (s.saved_extra != nullptr) s.saved_extra[e] = c_prev;
    cell::lstm_forward(i, f, gc, o, A(c_prev), c, h);
    g[j] = T(i);
    g[H + j] = T(f);
    g[2 * H + j] = T(gc);
    g[3 * H + j] = T(o);
    s.c[e] = T(c);
    s.h[e] = T(h);
    s.out[e] = T(h);
  } else {  // GRU
    const T* gh = s.gates_h + b * 3 * H;
    const A h_n = A(gh[2 * H + j]) + (s.bias_hn != nullptr ? A(s.bias_hn[j]) : A(0));
    A r, z, n, h;
    cell::gru_forward(A(g[j]), A(g[H + j]), A(g[2 * H + j]), A(gh[j]), A(gh[H + j]), h_n,
                      A(s.h[e]), r, z, n, h);
    g[j] = T(r);
    g[H + j] = T(z);
    g[2 * H + j] = T(n);
    if (s.saved_extra != nullptr) s.saved_extra[e] = T(h_n);
    s.h[e] = T(h);
    s.out[e] = T(h);
  }
}

template <Mode M, typename T>
RK_HD_INLINE void backward_element(const BackwardStep<T>& s, int64_t b, int64_t j) {
  using A = at::opmath_type<T>;
  const int64_t H = s.hidden;
  const int64_t GH = gate_count(M) * H;
  const int64_t e = b * H + j;
  const T* g = s.gates + b * GH;
  T* dg = s.dgates + b * GH;
  const A dh = A(s.dh[e]) + (s.grad_out != nullptr ? A(s.grad_out[e]) : A(0));
  if constexpr (M == Mode::RNN_TANH || M == Mode::RNN_RELU) {
    const A h = A(s.h[e]);
    dg[j] = T(M == Mode::RNN_RELU ? cell::rnn_relu_backward(h, dh) : cell::rnn_tanh_backward(h, dh));
  } else if constexpr (M == Mode::LSTM) {
    A di, df, dgc, d_o, dc_prev;
    cell::lstm_backward(A(g[j]), A(g[H + j]), A(g[2 * H + j]), A(g[3 * H + j]), A(s.extra[e]), dh,
                        A(s.dc[e]), di, df, dgc, d_o, dc_prev);
    dg[j] = T(di);
    dg[H + j] = T(df);
    dg[2 * H + j] = T(dgc);
    dg[3 * H + j] = T(d_o);
    s.dc[e] = T(dc_prev);
  } else {  // GRU
    T* dgh = s.dgates_h + b * GH;
    A dr, dz, dx_n, dh_n, direct;
    cell::gru_backward(A(g[j]), A(g[H + j]), A(g[2 * H + j]), A(s.extra[e]), A(s.h_prev[e]), dh,
                       dr, dz, dx_n, dh_n, direct);
    dg[j] = T(dr);
    dg[H + j] = T(dz);
    dg[2 * H + j] = T(dx_n);
    dgh[j] = T(dr);
    dgh[H + j] = T(dz);
    dgh[2 * H + j] = T(dh_n);
    s.dh[e] = T(direct);
  }
}

// dst = a + b (b may be null).
template <typename T>
RK_HD_INLINE void add_element(T* dst, const T* a, const T* b, int64_t i) {
  using A = at::opmath_type<T>;
  dst[i] = b != nullptr ? T(A(a[i]) + A(b[i])) : a[i];
}

}  // namespace rnnkern
