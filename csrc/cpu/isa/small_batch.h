// The whole time loop of one layer-direction for small batches (1-8 rows), in
// one parallel region.
//
// Each thread owns a fixed range of hidden units, with all the gates of those
// units: in forward it computes their rows of h' W_hh^T and runs the pointwise
// step on them; in backward it runs their pointwise step and then their columns
// of dh' = dgates W_hh. A thread therefore reads the same slice of W_hh at every
// step, which stays in its core's cache for the whole sequence, and the threads
// meet once per step at a spinning barrier (spin_barrier.h; twice with an LSTM
// projection). In float, the forward keeps its slice transposed for
// broadcast-FMAs (resident.h). At small batches the per-step GEMM + parallel
// pointwise pass costs more in dispatch, thread wake-ups and weight traffic than
// in arithmetic. Both entry points return false, having done nothing, where the
// path does not apply (larger batches; the projected LSTM's forward in double).
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

// Sequences shorter than this run on W_hh as it is.
constexpr int64_t kMinResidentSteps = 4;

// Below this many weight elements per thread, one thread does it all.
constexpr int64_t kMinWeightsPerThread = 16 * 1024;

struct UnitRange {
  int64_t begin, end;
};

// Thread `tid` of `threads` owns units [begin, end): equal parts, multiples of
// 16 so each starts on a vector boundary.
UnitRange units_of(int64_t tid, int64_t threads, int64_t hidden) {
  const int64_t per = ((hidden + threads - 1) / threads + 15) / 16 * 16;
  return {std::min(hidden, tid * per), std::min(hidden, (tid + 1) * per)};
}

int64_t thread_count(int64_t weights, int64_t steps) {
  // A step or two (a cell) costs less than waking the other threads for it.
  if (omp_in_parallel() || steps < kMinResidentSteps) return 1;
  const int64_t wanted = weights / kMinWeightsPerThread;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), wanted));
}

bool applies(const LayerDims& dims, const SeqLayout& seq) {
  return seq.batch <= kSmallGemmMaxRows && dims.out == dims.hidden && seq.steps > 0;
}

// The projected LSTM runs here only on resident float weights.
template <typename T>
bool applies_forward(const LayerDims& dims, const SeqLayout& seq) {
  if (dims.out == dims.hidden) return applies(dims, seq);
  return std::is_same<T, float>::value && seq.batch <= kSmallGemmMaxRows &&
         seq.steps >= kMinResidentSteps;
}

// One thread of the loop: its units, and the barrier it meets the others at.
struct Share {
  UnitRange own;
  SpinBarrier barrier;
  int64_t tid, threads;
};

// Nothing to add to a step's gates before its recurrent product.
struct NoInputStep {
  void operator()(int64_t, int64_t, int64_t) const {}
};

// With a projection (h = (o * tanh(c)) W_hr^T, R < H entries) a step has two
// phases: the gates and cell of the own hidden units, then, once every unit's
// o * tanh(c) is there, the own entries of h from the thread's resident slice
// of W_hr. Without one, h is the cell's output and a step is one phase.
// input_step(s, rows, off) runs first in step s (wavefront.h: the input's part
// of the gates, once the layer below has written that step).
template <Mode M, typename T, typename InputStep = NoInputStep>
void forward_thread(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                    const ForwardBuffers<T>& buf, T* next, const Share& share,
                    const InputStep& input_step = InputStep{}) {
  const int64_t H = dims.hidden, R = dims.out, G = gate_count(M), GH = G * H, B = seq.batch;
  const bool proj = buf.w_hr != nullptr;
  const UnitRange own = share.own;  // hidden units: gates, c
  const UnitRange mine = proj ? units_of(share.tid, share.threads, R) : own;  // entries of h
  const int64_t width = own.end - own.begin, h_width = mine.end - mine.begin;
  // float: the own rows of W_hh (and of W_hr), transposed, stay in this core's
  // cache (once there are enough steps to pay for transposing them: about one
  // step's work).
  ResidentLayout layout{}, proj_layout{};
  float* resident = nullptr;
  float* resident_proj = nullptr;
  const bool use_resident = std::is_same<T, float>::value && seq.steps >= kMinResidentSteps;
  if constexpr (std::is_same<T, float>::value) {
    if (use_resident) {
      layout = resident_layout(R, width, G, B);
      resident = thread_scratch(3, layout.size());
      pack_resident(buf.w_hh, H, own.begin, layout, resident);
      if (proj) {
        proj_layout = resident_layout(H, h_width, 1, B);
        resident_proj = thread_scratch(4, proj_layout.size());
        pack_resident(buf.w_hr, R, mine.begin, proj_layout, resident_proj);
      }
    }
  }
  T* h_prev = buf.h;  // complete h' of every row; read by all threads
  T* h_next = next;   // written by each thread on its own entries
  int64_t phase = 0;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = reverse ? seq.steps - 1 - s : s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    T* gates = buf.gates + off * GH;
    T* out = buf.output + off * R;
    input_step(s, rows, off);
    // Own entries of every row into h_next: the step updates the active rows;
    // rows not in this step carry their state over.
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(h_next + b * R + mine.begin, h_prev + b * R + mine.begin, h_width * sizeof(T));
    }
    if (buf.saved_h_prev != nullptr) {
      for (int64_t b = 0; b < rows; ++b) {
        std::memcpy(buf.saved_h_prev + (off + b) * R + mine.begin, h_prev + b * R + mine.begin,
                    h_width * sizeof(T));
      }
    }
    bool multiplied = false;
    if constexpr (std::is_same<T, float>::value) {
      if (use_resident) {
        resident_product(rows, h_prev, R, resident, layout,
                         (M == Mode::GRU ? buf.gates_h : gates) + own.begin, GH, H,
                         /*accumulate=*/M != Mode::GRU);
        multiplied = true;
      }
    }
    for (int64_t g = 0; g < G && !multiplied; ++g) {  // the rows of W_hh for the own units
      const int64_t n0 = g * H + own.begin, n1 = g * H + own.end;
      if (M == Mode::GRU) {
        dot_rows(rows, n0, n1, H, T(1), h_prev, H, buf.w_hh, H, T(0), buf.gates_h, GH);
      } else {
        dot_rows(rows, n0, n1, H, T(1), h_prev, H, buf.w_hh, H, T(1), gates, GH);
      }
    }
    T* h_raw = proj ? buf.h_raw + (buf.h_raw_saved ? off * H : 0) : nullptr;
    const ForwardStep<T> step{M,
                              rows,
                              H,
                              gates,
                              buf.gates_h,
                              buf.bias_hn,
                              proj ? h_raw : h_next,
                              buf.c,
                              proj ? h_raw : out,
                              buf.saved_extra ? buf.saved_extra + off * H : nullptr};
    for (int64_t b = 0; b < rows; ++b) {
#pragma omp simd
      for (int64_t j = own.begin; j < own.end; ++j) forward_element<M>(step, b, j);
    }
    if constexpr (std::is_same<T, float>::value) {
      if (proj) {  // every unit's o * tanh(c), then the own entries of h
        share.barrier.arrive_and_wait(share.tid, ++phase);
        resident_product(rows, h_raw, H, resident_proj, proj_layout, out + mine.begin, R, 0,
                         /*accumulate=*/false);
        for (int64_t b = 0; b < rows; ++b) {
          std::memcpy(h_next + b * R + mine.begin, out + b * R + mine.begin,
                      h_width * sizeof(T));
        }
      }
    }
    share.barrier.arrive_and_wait(share.tid, ++phase);
    std::swap(h_prev, h_next);
  }
}

// Nothing to do around a backward step.
struct NoBackwardHooks {
  void before(int64_t, int64_t, int64_t) const {}
  void after_gates(int64_t, int64_t, int64_t) const {}
};

// hooks.before(s, rows, off) runs first in step s, hooks.after_gates(...) once
// the step's gate gradients are written (wavefront.h: wait for the layer
// above's gradient of this step; hand the layer below its own). With a
// projection (h = h_raw W_hr^T, R entries) a step has two phases: the own
// entries of h's total gradient (dh + the output's), then, once all are there,
// the own units' gradient of h_raw (times the thread's columns of W_hr) and
// their pointwise step; and the thread's own entries of dh' are a second set
// of columns, so the next step starts only once every entry is written.
template <Mode M, typename T, typename Hooks = NoBackwardHooks>
void backward_thread(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                     const BackwardBuffers<T>& buf, const Share& share,
                     const Hooks& hooks = Hooks{}) {
  const int64_t H = dims.hidden, R = dims.out, GH = gate_count(M) * H;
  const bool proj = buf.w_hr != nullptr;
  const UnitRange own = share.own;  // hidden units: gates, c
  const UnitRange mine = proj ? units_of(share.tid, share.threads, R) : own;  // entries of h
  int64_t phase = 0;
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = reverse ? s : seq.steps - 1 - s;
    const int64_t rows = seq.sizes[t];
    const int64_t off = seq.offsets[t];
    const T* grad_out = buf.grad_output ? buf.grad_output + off * R : nullptr;
    T* dh = buf.dh;
    hooks.before(s, rows, off);
    if (proj) {  // back through h = h_raw W_hr^T first
      T* dh_total = buf.dh_out + off * R;
      for (int64_t b = 0; b < rows; ++b) {
#pragma omp simd
        for (int64_t j = mine.begin; j < mine.end; ++j) {
          dh_total[b * R + j] = grad_out ? buf.dh[b * R + j] + grad_out[b * R + j]
                                         : buf.dh[b * R + j];
        }
      }
      share.barrier.arrive_and_wait(share.tid, ++phase);
      axpy_rows(rows, own.begin, own.end, R, T(1), dh_total, R, buf.w_hr, H, T(0), buf.dh_raw, H);
      dh = buf.dh_raw;
      grad_out = nullptr;
    }
    const BackwardStep<T> step{M,
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
    for (int64_t b = 0; b < rows; ++b) {
#pragma omp simd
      for (int64_t j = own.begin; j < own.end; ++j) backward_element<M>(step, b, j);
    }
    hooks.after_gates(s, rows, off);
    // dh' needs every unit's gate gradients
    share.barrier.arrive_and_wait(share.tid, ++phase);
    // Own entries of dh' = dgates_h W_hh (+ the direct part the GRU step left).
    axpy_rows(rows, mine.begin, mine.end, GH, T(1), buf.dgates_h + off * GH, GH, buf.w_hh, R,
              M == Mode::GRU ? T(1) : T(0), buf.dh, R);
    // With a projection the next step reads every entry of dh'.
    if (proj) share.barrier.arrive_and_wait(share.tid, ++phase);
  }
}

template <typename F>
void run_threads(int64_t threads, int64_t hidden, const F& body) {
  std::vector<PhaseCounter> counters(threads);
  if (threads == 1) {
    body(Share{UnitRange{0, hidden}, SpinBarrier(counters.data(), 1), 0, 1});
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    // OpenMP may give fewer threads than asked for: share among those there are.
    const int64_t n = omp_get_num_threads(), tid = omp_get_thread_num();
    body(Share{units_of(tid, n, hidden), SpinBarrier(counters.data(), n), tid, n});
  }
}

template <typename T>
bool small_batch_forward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                         const ForwardBuffers<T>& buf) {
  if (!applies_forward<T>(dims, seq)) return false;
  const int64_t H = dims.hidden, R = dims.out;
  T* next = reinterpret_cast<T*>(thread_scratch(2, seq.batch * R * sizeof(T) / sizeof(float)));
  const int64_t threads =
      thread_count(gate_count(dims.mode) * H * R + (buf.w_hr != nullptr ? R * H : 0), seq.steps);
  dispatch_mode(dims.mode, [&](auto mode) {
    run_threads(threads, H, [&](const Share& share) {
      forward_thread<decltype(mode)::value>(dims, seq, reverse, buf, next, share);
    });
  });
  if (seq.steps % 2 == 1) {  // the final state is in the other buffer
    std::memcpy(buf.h, next, seq.batch * R * sizeof(T));
  }
  return true;
}

template <typename T>
bool small_batch_backward(const LayerDims& dims, const SeqLayout& seq, bool reverse,
                          const BackwardBuffers<T>& buf) {
  if (seq.batch > kSmallGemmMaxRows || seq.steps == 0) return false;
  const int64_t H = dims.hidden, R = dims.out;
  const int64_t threads = thread_count(
      gate_count(dims.mode) * H * R + (buf.w_hr != nullptr ? R * H : 0), seq.steps);
  dispatch_mode(dims.mode, [&](auto mode) {
    run_threads(threads, H, [&](const Share& share) {
      backward_thread<decltype(mode)::value>(dims, seq, reverse, buf, share);
    });
  });
  return true;
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
