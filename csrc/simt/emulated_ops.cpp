// The CUDA kernels (csrc/cuda/kernels.h), compiled for the CPU through the
// SIMT emulation harness, behind the same driver and ops as the real devices.
// Registered as torch.ops.rnnkern_simt.* on CPU tensors, so the tests can run
// every kernel's source against the CPU ops without a GPU. The GEMMs, which
// cuBLAS does on a GPU, go through ATen here.
#include "simt_emulation.h"

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>

#include "../cuda/launch_config.h"
#include "../cuda/persistent_backend.h"
#include "../core/aten_gemm.h"
#include "../core/generic_backend.h"
#include "../core/bidirectional_op.h"
#include "../core/cell_op.h"
#include "../core/layer_backward.h"
#include "../core/layer_op.h"
#include "../core/stack_op.h"

// The op namespace; a test building a mutated copy of the kernels gives it another.
#ifndef RNNKERN_SIMT_OPS
#define RNNKERN_SIMT_OPS rnnkern_simt
#endif
#define RNNKERN_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define RNNKERN_LIBRARY_IMPL(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)

namespace rnnkern {
namespace simt_ops {

using cuda::LaunchConfig;

LaunchConfig& launch_config() {
  static LaunchConfig config;
  return config;
}

// The device the persistent kernels are planned for here, small enough that
// the tests' sizes need several blocks, and what their launches claim.
struct PersistentConfig {
  bool enabled = false;
  cuda::DeviceLimits limits{"emulated", 4, 48 * 1024, 49 * 1024, 65536, 2048, 32};
  int64_t threads = 64;
  int64_t resident = 0;  // co-resident blocks a launch claims; 0: what the occupancy says
  int64_t launches = 0;  // persistent kernels run so far
  bool refuse_pairs = false;  // as a GPU too busy for both directions' grid at once
  int64_t cache = cuda::kCacheAll;  // weight chunks a lane may keep in registers
  int64_t max_grid = 0;  // larger grids are refused, as by a busy GPU (0: none)
};

PersistentConfig& persistent_config() {
  static PersistentConfig config;
  return config;
}

// The persistent kernels' Device (persistent_launch.h) on the emulation.
struct EmulatedDevice {
  static bool enabled() { return persistent_config().enabled; }
  static cuda::DeviceLimits limits() { return persistent_config().limits; }
  static int64_t max_threads() { return persistent_config().threads; }
  static int64_t cache_cap() { return persistent_config().cache; }
  static at::TensorOptions options() { return at::TensorOptions().device(at::kCPU); }
  // As the CUDA launcher: occupancy at the launch bound's worst-case registers;
  // the co-resident blocks a launch claims, or 0 when `blocks` do not fit.
  static int64_t resident_for(const cuda::PersistentPlan& plan, int64_t blocks) {
    const PersistentConfig& config = persistent_config();
    const int64_t fits = cuda::blocks_per_sm(config.limits, plan.threads,
                                             65536 / cuda::kPersistentThreads - 1,
                                             plan.smem_bytes) * config.limits.sms;
    if (config.resident > 0) return config.resident;
    return fits < blocks ? 0 : fits;
  }
  template <typename Args>
  static bool launch(void (*kernel)(Args), const cuda::PersistentPlan& plan, const Args& args) {
    const int64_t resident = resident_for(plan, plan.blocks);
    const int64_t max_grid = persistent_config().max_grid;
    if (resident == 0 || (max_grid > 0 && plan.blocks > max_grid)) return false;
    simt::launch_cooperative(static_cast<uint64_t>(resident), kernel, dim3(plan.blocks),
                             dim3(plan.threads), plan.smem_bytes, args);
    ++persistent_config().launches;
    return true;
  }
  template <typename Args>
  static bool launch_pair(void (*kernel)(Args, Args, int64_t), const cuda::PersistentPlan& plan,
                          const Args& first, const Args& second) {
    const int64_t resident = resident_for(plan, 2 * plan.blocks);
    if (resident == 0 || persistent_config().refuse_pairs) return false;
    simt::launch_cooperative(static_cast<uint64_t>(resident), kernel, dim3(2 * plan.blocks),
                             dim3(plan.threads), plan.smem_bytes, first, second, plan.blocks);
    ++persistent_config().launches;
    return true;
  }
};

// The persistent kernels as on the GPU (persistent_launch.h), else the
// per-step kernels of kernels.h.
struct Backend : cuda::PersistentBackend<Backend, EmulatedDevice> {
  template <typename T>
  static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
    aten_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  template <typename T>
  static void copy(T* dst, const T* src, int64_t n) {
    if (n > 0) std::memcpy(dst, src, n * sizeof(T));
  }
  template <typename T>
  static void add(T* dst, const T* a, const T* b, int64_t n) {
    if (n == 0) return;
    const LaunchConfig& config = launch_config();
    simt::launch(&cuda::add_kernel<T>, dim3(cuda::blocks_for(n, config)), dim3(config.threads), 0,
                 dst, a, b, n);
  }
  template <typename T>
  static void forward_step(const ForwardStep<T>& s) {
    const int64_t n = s.rows * s.hidden;
    if (n == 0) return;
    const LaunchConfig& config = launch_config();
    dispatch_mode(s.mode, [&](auto mode) {
      simt::launch(&cuda::forward_step_kernel<decltype(mode)::value, T>,
                   dim3(cuda::blocks_for(n, config)), dim3(config.threads), 0, s);
    });
  }
  template <typename T>
  static void backward_step(const BackwardStep<T>& s) {
    const int64_t n = s.rows * s.hidden;
    if (n == 0) return;
    const LaunchConfig& config = launch_config();
    dispatch_mode(s.mode, [&](auto mode) {
      simt::launch(&cuda::backward_step_kernel<decltype(mode)::value, T>,
                   dim3(cuda::blocks_for(n, config)), dim3(config.threads), 0, s);
    });
  }
  static at::Tensor column_sum(const at::Tensor& x, int64_t block_rows = cuda::kSumRows) {
    const int64_t rows = x.size(0), cols = x.size(1);
    at::Tensor out = at::empty({cols}, x.options());
    if (cols == 0) return out;
    RNNKERN_DISPATCH_TYPES(x.scalar_type(), "rnnkern_simt_column_sum", [&] {
      simt::launch(&cuda::column_sum_kernel<scalar_t>,
                   dim3(cuda::column_sum_blocks(cols, launch_config())),
                   dim3(cuda::kSumCols, block_rows), 0, x.data_ptr<scalar_t>(), rows, cols,
                   out.data_ptr<scalar_t>());
    });
    return out;
  }
};

void set_launch_config(int64_t threads, int64_t max_blocks, int64_t schedule_seed) {
  TORCH_CHECK(threads >= 1 && threads <= 1024 && max_blocks >= 1,
              "rnnkern_simt: threads must be in [1, 1024] and max_blocks >= 1");
  launch_config().threads = static_cast<int>(threads);
  launch_config().max_blocks = max_blocks;
  simt::set_schedule_seed(static_cast<uint64_t>(schedule_seed));
}

void set_persistent_config(bool enabled, int64_t sms, int64_t smem_bytes, int64_t threads,
                           int64_t resident, bool weak_memory, bool refuse_pairs,
                           int64_t register_cache, int64_t max_grid) {
  TORCH_CHECK(sms >= 1 && smem_bytes >= 1 && threads >= 32 && threads % 32 == 0 &&
                  threads <= cuda::kPersistentThreads && resident >= 0,
              "rnnkern_simt: bad persistent-kernel configuration");
  PersistentConfig& config = persistent_config();
  config.enabled = enabled;
  config.limits.sms = sms;
  config.limits.smem_per_block = smem_bytes;
  config.limits.smem_per_sm = smem_bytes + 1024;  // CUDA reserves 1 KiB per block
  config.threads = threads;
  config.resident = resident;
  config.refuse_pairs = refuse_pairs;
  config.cache = register_cache < 0 ? cuda::kCacheAll : register_cache;
  config.max_grid = max_grid;
  simt::set_weak_memory(weak_memory);
}

// The grid barrier microbenchmark's kernel on the emulation (as the CUDA op
// _cuda_grid_barrier_run), with the co-residency the emulated device allows.
void grid_barrier_run(int64_t blocks, int64_t threads, int64_t steps) {
  TORCH_CHECK(blocks >= 1 && threads >= 32 && threads <= cuda::kPersistentThreads &&
                  steps >= 0 && steps < (int64_t{1} << 31) &&
                  cuda::barrier_count_fits(steps, blocks),
              "rnnkern_simt: bad grid barrier benchmark size");
  unsigned counter = 0;
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(threads));
  simt::launch_cooperative(static_cast<uint64_t>(blocks), &cuda::barrier_kernel, grid, block, 0,
                           &counter, static_cast<int>(steps));
  // One block meets at __syncthreads() only.
  TORCH_CHECK(counter == static_cast<unsigned>(blocks > 1 ? steps * blocks : 0),
              "rnnkern_simt: barrier count ",
              counter, " after ", steps, " barriers of ", blocks, " blocks");
}

int64_t persistent_launches() { return persistent_config().launches; }

// The plan for a shape on a named device ("A100", "H100" or "emulated"):
// [used, blocks, units, threads, tile, shared memory bytes, co-resident blocks
// the occupancy allows at the launch bound's registers, splits of K, batch
// classes].
std::vector<int64_t> persistent_plan(bool backward, int64_t mode, int64_t hidden, int64_t batch,
                                     bool projection, at::ScalarType dtype,
                                     const std::string& device) {
  const cuda::DeviceLimits limits = device == "A100"   ? cuda::kA100
                                    : device == "H100" ? cuda::kH100
                                                       : persistent_config().limits;
  const int64_t elem = c10::elementSize(dtype);
  const int64_t acc = dtype == at::kDouble ? 8 : 4;
  const cuda::PersistentPlan p = cuda::plan_persistent(
      backward, checked_mode(mode), hidden, batch, projection, elem, acc, limits,
      device == "emulated" ? persistent_config().threads : cuda::kPersistentThreads);
  const int64_t resident =
      p.use ? cuda::blocks_per_sm(limits, p.threads, 65536 / cuda::kPersistentThreads - 1,
                                  p.smem_bytes) * limits.sms
            : 0;
  return {p.use, p.blocks, p.units, p.threads, p.tile, p.smem_bytes, resident, p.splits,
          p.classes};
}

// The wavefront's plan (forward or backward) for a float stack of `layers`
// layers of H units on a named device ("A100", "H100" or "emulated"):
// [used, blocks per layer, units, tile, splits of K, batch classes].
std::vector<int64_t> wavefront_plan(int64_t mode, int64_t hidden, int64_t batch, int64_t layers,
                                    const std::string& device, bool backward) {
  TORCH_CHECK(hidden >= 1 && batch >= 1 && layers >= 1, "rnnkern_simt: bad wavefront shape");
  const Mode m = checked_mode(mode);
  const cuda::PersistentPlan p =
      device == "emulated"
          ? cuda::plan_wavefront<EmulatedDevice, float>(backward, LayerDims{m, hidden, hidden},
                                                        SeqLayout::dense(1, batch), layers)
          : cuda::plan_wavefront_layer(backward, m, hidden, batch, 4, 4,
                                       device == "A100" ? cuda::kA100 : cuda::kH100, layers);
  return {p.use, p.blocks, p.units, p.tile, p.splits, p.classes};
}

// block_rows other than cuda::kSumRows is a wrong launch configuration, for
// the test that shows the emulation catches one.
at::Tensor column_sum(const at::Tensor& x, int64_t block_rows) {
  TORCH_CHECK(x.dim() == 2, "rnnkern_simt: column_sum takes a 2-D tensor");
  return Backend::column_sum(x.contiguous(), block_rows);
}

}  // namespace simt_ops

RNNKERN_LIBRARY(RNNKERN_SIMT_OPS, m) {
  m.def(
      "layer_forward(int mode, Tensor input, Tensor? batch_sizes, Tensor hx, Tensor? cx, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, "
      "bool train) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "layer_backward(int mode, Tensor input, Tensor? batch_sizes, Tensor w_ih, Tensor w_hh, "
      "Tensor? w_hr, Tensor output, Tensor saved_h_prev, Tensor saved_gates, "
      "Tensor saved_extra, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, bool reverse, "
      "int batch, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def(
      "layer_backward_data(int mode, Tensor input, Tensor? batch_sizes, Tensor w_ih, "
      "Tensor w_hh, Tensor? w_hr, Tensor output, Tensor saved_h_prev, Tensor saved_gates, "
      "Tensor saved_extra, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, bool reverse, "
      "int batch, bool want_input) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "layer_forward_bidirectional(int mode, Tensor input, Tensor? batch_sizes, "
      "Tensor?[] forward, Tensor?[] reverse, bool train) -> (Tensor[] forward_results, "
      "Tensor[] reverse_results)");
  m.def(
      "layer_backward_bidirectional(int mode, Tensor input, Tensor? batch_sizes, "
      "Tensor?[] forward, Tensor?[] reverse, int batch, bool[4] output_mask) -> "
      "(Tensor[] forward_grads, Tensor[] reverse_grads)");
  m.def(
      "cell_forward(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh) -> (Tensor hy, Tensor cy)");
  m.def(
      "stack_forward(int mode, Tensor input, Tensor? batch_sizes, Tensor hx, Tensor? cx, "
      "Tensor?[] weights, int num_layers, bool bidirectional, float dropout, bool train) -> "
      "(Tensor, Tensor, Tensor, Tensor[])");
  m.def(
      "stack_backward(int mode, Tensor input, Tensor? batch_sizes, Tensor?[] weights, "
      "Tensor output, Tensor[] saved, Tensor? grad_output, Tensor? grad_hy, Tensor? grad_cy, "
      "int num_layers, bool bidirectional, float dropout, int batch, bool[4] output_mask) -> "
      "(Tensor, Tensor, Tensor, Tensor[])");
  m.def(
      "cell_forward_train(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "cell_backward(int mode, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor saved_gates, Tensor saved_extra, Tensor hy, Tensor? grad_hy, Tensor? grad_cy, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("column_sum(Tensor x, int block_rows=8) -> Tensor");
  // Threads per block and the grid cap of the 1-D kernels, and the seed of the
  // thread order inside blocks.
  m.def("set_launch_config(int threads, int max_blocks, int schedule_seed) -> ()");
  // The persistent kernels: on/off, the emulated device (SMs, shared memory
  // per block, threads per block), the co-resident blocks launches claim (0:
  // what the occupancy computes), the weak memory model, and whether the
  // merged grid of a bidirectional layer's two directions is refused.
  m.def(
      "set_persistent_config(bool enabled, int sms=4, int smem_bytes=49152, int threads=64, "
      "int resident=0, bool weak_memory=True, bool refuse_pairs=False, int register_cache=-1, "
      "int max_grid=0) -> ()");
  m.def(
      "persistent_plan(bool backward, int mode, int hidden, int batch, bool projection, "
      "ScalarType dtype, str device) -> int[]");
  m.def("persistent_launches() -> int");
  m.def(
      "wavefront_plan(int mode, int hidden, int batch, int layers, str device=\"emulated\", "
      "bool backward=False) -> int[]");
  m.def("grid_barrier_run(int blocks, int threads, int steps) -> ()");
}

RNNKERN_LIBRARY_IMPL(RNNKERN_SIMT_OPS, CPU, m) {
  m.impl("layer_forward", &layer_forward<simt_ops::Backend>);
  m.impl("layer_backward", &layer_backward<simt_ops::Backend>);
  m.impl("layer_backward_data", &layer_backward_data<simt_ops::Backend>);
  m.impl("layer_forward_bidirectional", &layer_forward_bidirectional<simt_ops::Backend>);
  m.impl("layer_backward_bidirectional", &layer_backward_bidirectional<simt_ops::Backend>);
  m.impl("cell_forward", &cell_forward<simt_ops::Backend>);
  m.impl("cell_forward_train", &cell_forward_train<simt_ops::Backend>);
  m.impl("cell_backward", &cell_backward<simt_ops::Backend>);
  m.impl("stack_forward", &stack_forward<simt_ops::Backend>);
  m.impl("stack_backward", &stack_backward<simt_ops::Backend>);
  m.impl("column_sum", &simt_ops::column_sum);
}

RNNKERN_LIBRARY_IMPL(RNNKERN_SIMT_OPS, CompositeExplicitAutograd, m) {
  m.impl("set_launch_config", &simt_ops::set_launch_config);
  m.impl("set_persistent_config", &simt_ops::set_persistent_config);
  m.impl("persistent_plan", &simt_ops::persistent_plan);
  m.impl("persistent_launches", &simt_ops::persistent_launches);
  m.impl("wavefront_plan", &simt_ops::wavefront_plan);
  m.impl("grid_barrier_run", &simt_ops::grid_barrier_run);
}

}  // namespace rnnkern

// `import rnnkern._simt` needs a module init; see ops.cpp.
#include <Python.h>
extern "C" PyObject* PyInit__simt(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_simt", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
