// Argument checks of the layer ops, shared by every device.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "layer_op.h"

namespace rnnkern {

Mode checked_mode(int64_t mode) {
  TORCH_CHECK(mode >= 0 && mode <= 3, "rnnkern: unknown mode ", mode,
              " (0 RNN_TANH, 1 RNN_RELU, 2 LSTM, 3 GRU)");
  return static_cast<Mode>(mode);
}

SeqLayout checked_layout(const Tensor& input, const OptTensor& batch_sizes) {
  const Tensor* bs = defined_or_null(batch_sizes);
  if (bs == nullptr) {
    TORCH_CHECK(input.dim() == 3, "rnnkern: input must be [seq_len, batch, input_size], got ",
                input.sizes());
    return SeqLayout::dense(input.size(0), input.size(1));
  }
  TORCH_CHECK(input.dim() == 2, "rnnkern: packed input must be [rows, input_size], got ",
              input.sizes());
  TORCH_CHECK(bs->dim() == 1 && bs->scalar_type() == at::kLong && bs->device().is_cpu(),
              "rnnkern: batch_sizes must be a 1-D int64 CPU tensor");
  const Tensor sizes = bs->contiguous();
  const int64_t* p = sizes.data_ptr<int64_t>();
  const int64_t steps = sizes.numel();
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(p[t] > 0 && (t == 0 || p[t] <= p[t - 1]),
                "rnnkern: batch_sizes must be positive and non-increasing");
  }
  SeqLayout seq = SeqLayout::packed(p, steps);
  TORCH_CHECK(seq.rows_total == input.size(0), "rnnkern: batch_sizes sum to ", seq.rows_total,
              " but the packed input has ", input.size(0), " rows");
  return seq;
}

LayerDims checked_weights(Mode mode, const Tensor& input, const Tensor& w_ih, const Tensor& w_hh,
                          const OptTensor& w_hr) {
  TORCH_CHECK(w_hh.dim() == 2 && w_ih.dim() == 2, "rnnkern: weights must be 2-D");
  const Tensor* proj = defined_or_null(w_hr);
  const int64_t R = w_hh.size(1);  // the size of h
  const int64_t H = proj ? proj->size(1) : R;
  const int64_t GH = gate_count(mode) * H;
  if (proj != nullptr) {
    TORCH_CHECK(mode == Mode::LSTM, "rnnkern: only the LSTM has a projection (w_hr)");
    TORCH_CHECK(proj->dim() == 2 && proj->size(0) == R && R < H,
                "rnnkern: weight_hr must have shape [proj_size, hidden_size] with proj_size < "
                "hidden_size, got ", proj->sizes());
  }
  TORCH_CHECK(w_hh.size(0) == GH, "rnnkern: weight_hh must have shape [", GH, ", ", R, "], got ",
              w_hh.sizes());
  TORCH_CHECK(w_ih.size(0) == GH && w_ih.size(1) == input.size(-1),
              "rnnkern: weight_ih must have shape [", GH, ", ", input.size(-1), "], got ",
              w_ih.sizes());
  for (const Tensor* w : {&w_ih, &w_hh, proj}) {
    if (w == nullptr) continue;
    TORCH_CHECK(w->scalar_type() == input.scalar_type(), "rnnkern: weight dtype ",
                w->scalar_type(), " does not match input dtype ", input.scalar_type());
    TORCH_CHECK(w->device() == input.device(), "rnnkern: weights and input must be on one device");
  }
  return LayerDims{mode, H, R};
}

void check_state(const char* name, const Tensor& s, const Tensor& like, int64_t batch,
                 int64_t size) {
  TORCH_CHECK(s.dim() == 2 && s.size(0) == batch && s.size(1) == size, "rnnkern: ", name,
              " must have shape [", batch, ", ", size, "], got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == like.scalar_type() && s.device() == like.device(), "rnnkern: ",
              name, " must match the input's dtype and device");
}

}  // namespace rnnkern
