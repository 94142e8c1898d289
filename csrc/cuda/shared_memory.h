// Block-shared memory declarations that compile both under nvcc and under the
// CPU SIMT emulation (simt_emulation.h). Kernels write
//   RK_SHARED(float, partial, 256);       // __shared__ float partial[256];
//   RK_DYNAMIC_SHARED(float, scratch);    // launch-time sized, float* scratch
#pragma once

#if defined(RNNKERN_SIMT_EMULATION)
#include "../simt/simt_emulation.h"
#else
#define RK_SHARED(type, name, count) __shared__ type name[count]
// One untyped extern array, cast per use: nvcc rejects `extern __shared__ T x[]`
// declared with different T in different template instantiations.
#define RK_DYNAMIC_SHARED(type, name)                  \
  extern __shared__ unsigned char rk_dynamic_smem[]; \
  type* name = reinterpret_cast<type*>(rk_dynamic_smem)
#endif
