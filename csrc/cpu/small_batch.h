// The whole time loop of one layer-direction for small batches (1-8 rows), in
// one parallel region.
//
// Each thread owns a fixed range of hidden units, with all the gates of those
// units: in forward it computes their rows of h' W_hh^T and runs the pointwise
// step on them; in backward it runs their pointwise step and then their columns
// of dh' = dgates W_hh. A thread therefore reads the same slice of W_hh at every
// step, which stays in its core's cache for the whole sequence, and the threads
// meet once per step at a barrier. At small batches the per-step GEMM + parallel
// pointwise pass costs more in dispatch, thread wake-ups and weight traffic than
// in arithmetic.
#pragma once

#include "../rnnkern/driver.h"

namespace rnnkern {
namespace cpu {

// For float and double. Both return false, having done nothing, where the path
// does not apply (larger batches, the LSTM projection).
template <typename T>
bool small_batch_forward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                         const ForwardBuffers<T>& buf);
template <typename T>
bool small_batch_backward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                          const BackwardBuffers<T>& buf);

}  // namespace cpu
}  // namespace rnnkern
