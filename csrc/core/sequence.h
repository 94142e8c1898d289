// Where each time step's rows live in a [rows_total, features] buffer.
//
// A dense [T, B, F] sequence and a packed one (torch's PackedSequence: the
// rows of step t are the first batch_sizes[t] sequences, stored one step after
// another) are both "rows_total rows, step t at offsets[t], sizes[t] rows".
// Because packed batches are sorted by decreasing length, the active rows of
// a step are always a prefix of the batch, so per-sequence state buffers of
// [B, H] are updated on their first sizes[t] rows.
#pragma once

#include <cstdint>
#include <vector>

namespace rnnkern {

struct SeqLayout {
  int64_t steps = 0;
  int64_t batch = 0;       // rows of the first (largest) step
  int64_t rows_total = 0;  // sum of sizes
  std::vector<int64_t> sizes;
  std::vector<int64_t> offsets;

  static SeqLayout dense(int64_t steps, int64_t batch) {
    SeqLayout s;
    s.steps = steps;
    s.batch = batch;
    s.rows_total = steps * batch;
    s.sizes.assign(steps, batch);
    s.offsets.resize(steps);
    for (int64_t t = 0; t < steps; ++t) s.offsets[t] = t * batch;
    return s;
  }

  // sizes must be non-increasing and positive; checked by the caller.
  static SeqLayout packed(const int64_t* sizes, int64_t steps) {
    SeqLayout s;
    s.steps = steps;
    s.batch = steps > 0 ? sizes[0] : 0;
    s.sizes.assign(sizes, sizes + steps);
    s.offsets.resize(steps);
    for (int64_t t = 0; t < steps; ++t) {
      s.offsets[t] = s.rows_total;
      s.rows_total += sizes[t];
    }
    return s;
  }
};

}  // namespace rnnkern
