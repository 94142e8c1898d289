// Arguments of one fused pointwise step: what the device backends implement.
// All buffers are row-major with `hidden` (H) columns per gate; G is
// gate_count(mode). Each backend runs cell_math.h over every (row, column).
#pragma once

#include <cstdint>

#include "cell_math.h"

namespace rnnkern {

template <typename T>
struct ForwardStep {
  Mode mode;
  int64_t rows;
  int64_t hidden;
  T* gates;              // [rows, G*H] pre-activations in (recurrent part added
                         // except for GRU), activated gates out
  const T* gates_h;      // GRU: [rows, 3H] h' W_hh^T, without b_hh
  const T* bias_hn;      // GRU: [H] b_hn, or null
  T* h;                  // [rows, H] state: h' in, h out
  T* c;                  // LSTM: [rows, H] state: c' in, c out
  T* out;                // [rows, H] this step's output rows
  T* saved_extra;        // [rows, H] or null: LSTM saves c', GRU saves h_n
};

template <typename T>
struct BackwardStep {
  Mode mode;
  int64_t rows;
  int64_t hidden;
  const T* gates;        // [rows, G*H] saved activated gates
  const T* extra;        // [rows, H] saved c' (LSTM) or h_n (GRU)
  const T* h_prev;       // [rows, H] saved h'
  const T* h;            // [rows, H] this step's output (RNN derivative)
  const T* grad_out;     // [rows, H] gradient of this step's output, or null
  T* dh;                 // [rows, H] state: gradient of h in (from later steps);
                         // out: the direct part of dh' (GRU), else untouched
  T* dc;                 // LSTM: [rows, H] state: dc in, dc' out
  T* dgates;             // [rows, G*H] out: gradients of the input-side pre-activations
  T* dgates_h;           // GRU: [rows, 3H] out: gradients of the hidden-side ones
};

}  // namespace rnnkern
