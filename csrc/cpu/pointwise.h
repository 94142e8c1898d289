// The fused pointwise steps on the CPU: cell_math.h over every (row, column),
// vectorised along the hidden dimension (`omp simd`; fast_math.h is written
// to vectorise) and split over threads when a step has enough elements.
// T is the storage type; the math runs in A = opmath_type<T> (float for
// bfloat16 and half).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "../rnnkern/cell_math.h"
#include "../rnnkern/step_args.h"

namespace rnnkern {
namespace cpu {

// Runs fn(row, col_begin, col_end) over rows x [0, cols) in column blocks.
template <typename F>
void for_each_block(int64_t rows, int64_t cols, int64_t elems_per_task, const F& fn) {
  constexpr int64_t kBlock = 512;
  const int64_t block = std::min(cols, kBlock);
  if (rows == 0 || block == 0) return;
  const int64_t blocks_per_row = (cols + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, elems_per_task / block);
  at::parallel_for(0, rows * blocks_per_row, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / blocks_per_row;
      const int64_t j0 = (task % blocks_per_row) * block;
      fn(row, j0, std::min(cols, j0 + block));
    }
  });
}

// Elements of one step below which threads cost more than they save.
constexpr int64_t kElemsPerTask = 8192;

template <typename T>
void forward_step(const ForwardStep<T>& s) {
  using A = at::opmath_type<T>;
  const int64_t H = s.hidden;
  const int64_t GH = gate_count(s.mode) * H;
  for_each_block(s.rows, H, kElemsPerTask, [&](int64_t b, int64_t j0, int64_t j1) {
    T* g = s.gates + b * GH;
    T* h = s.h + b * H;
    T* out = s.out + b * H;
    T* saved = s.saved_extra ? s.saved_extra + b * H : nullptr;
    switch (s.mode) {
      case Mode::RNN_TANH:
      case Mode::RNN_RELU: {
        const bool relu = s.mode == Mode::RNN_RELU;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          const A pre = A(g[j]);
          const T v = T(relu ? cell::rnn_relu_forward(pre) : cell::rnn_tanh_forward(pre));
          h[j] = v;
          out[j] = v;
        }
        break;
      }
      case Mode::LSTM: {
        T* c = s.c + b * H;
        if (saved) std::memcpy(saved + j0, c + j0, (j1 - j0) * sizeof(T));
        T *gi = g, *gf = g + H, *gg = g + 2 * H, *go = g + 3 * H;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          A i = A(gi[j]), f = A(gf[j]), gc = A(gg[j]), o = A(go[j]), c_new, h_new;
          cell::lstm_forward(i, f, gc, o, A(c[j]), c_new, h_new);
          gi[j] = T(i);
          gf[j] = T(f);
          gg[j] = T(gc);
          go[j] = T(o);
          c[j] = T(c_new);
          h[j] = T(h_new);
          out[j] = T(h_new);
        }
        break;
      }
      case Mode::GRU: {
        const T* gh = s.gates_h + b * GH;
        T *xr = g, *xz = g + H, *xn = g + 2 * H;
        const T* bias_hn = s.bias_hn;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          const A hn = A(gh[2 * H + j]) + (bias_hn ? A(bias_hn[j]) : A(0));
          A r, z, n, h_new;
          cell::gru_forward(A(xr[j]), A(xz[j]), A(xn[j]), A(gh[j]), A(gh[H + j]), hn, A(h[j]), r,
                            z, n, h_new);
          xr[j] = T(r);
          xz[j] = T(z);
          xn[j] = T(n);
          if (saved) saved[j] = T(hn);
          h[j] = T(h_new);
          out[j] = T(h_new);
        }
        break;
      }
    }
  });
}

template <typename T>
void backward_step(const BackwardStep<T>& s) {
  using A = at::opmath_type<T>;
  const int64_t H = s.hidden;
  const int64_t GH = gate_count(s.mode) * H;
  for_each_block(s.rows, H, kElemsPerTask, [&](int64_t b, int64_t j0, int64_t j1) {
    const T* g = s.gates + b * GH;
    const T* dy = s.grad_out ? s.grad_out + b * H : nullptr;
    T* dh = s.dh + b * H;
    T* dg = s.dgates + b * GH;
    switch (s.mode) {
      case Mode::RNN_TANH:
      case Mode::RNN_RELU: {
        const T* h = s.h + b * H;
        const bool relu = s.mode == Mode::RNN_RELU;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          const A d = A(dh[j]) + (dy ? A(dy[j]) : A(0));
          const A hj = A(h[j]);
          dg[j] = T(relu ? cell::rnn_relu_backward(hj, d) : cell::rnn_tanh_backward(hj, d));
        }
        break;
      }
      case Mode::LSTM: {
        const T* c_prev = s.extra + b * H;
        T* dc = s.dc + b * H;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          const A d = A(dh[j]) + (dy ? A(dy[j]) : A(0));
          A di, df, dgc, d_o, dc_prev;
          cell::lstm_backward(A(g[j]), A(g[H + j]), A(g[2 * H + j]), A(g[3 * H + j]),
                              A(c_prev[j]), d, A(dc[j]), di, df, dgc, d_o, dc_prev);
          dg[j] = T(di);
          dg[H + j] = T(df);
          dg[2 * H + j] = T(dgc);
          dg[3 * H + j] = T(d_o);
          dc[j] = T(dc_prev);
        }
        break;
      }
      case Mode::GRU: {
        const T* hn = s.extra + b * H;
        const T* h_prev = s.h_prev + b * H;
        T* dgh = s.dgates_h + b * GH;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) {
          const A d = A(dh[j]) + (dy ? A(dy[j]) : A(0));
          A dr, dz, dxn, dhn, direct;
          cell::gru_backward(A(g[j]), A(g[H + j]), A(g[2 * H + j]), A(hn[j]), A(h_prev[j]), d, dr,
                             dz, dxn, dhn, direct);
          dg[j] = T(dr);
          dg[H + j] = T(dz);
          dg[2 * H + j] = T(dxn);
          dgh[j] = T(dr);
          dgh[H + j] = T(dz);
          dgh[2 * H + j] = T(dhn);
          dh[j] = T(direct);
        }
        break;
      }
    }
  });
}

// dst = a + b (b may be null: dst = a).
template <typename T>
void add(T* dst, const T* a, const T* b, int64_t n) {
  using A = at::opmath_type<T>;
  if (b == nullptr) {
    if (n > 0 && dst != a) std::memcpy(dst, a, n * sizeof(T));
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = T(A(a[i]) + A(b[i]));
}

}  // namespace cpu
}  // namespace rnnkern
