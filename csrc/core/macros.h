// Portability macros shared by host (C++) and device (CUDA) code.
#pragma once

#if defined(__CUDACC__) || defined(RNNKERN_SIMT_EMULATION)
#define RK_HOST_DEVICE __host__ __device__
#else
#define RK_HOST_DEVICE
#endif

#if defined(__CUDACC__)
#define RK_INLINE __forceinline__
#elif defined(__GNUC__)
#define RK_INLINE inline __attribute__((always_inline))
#else
#define RK_INLINE inline
#endif

#define RK_HD_INLINE RK_HOST_DEVICE RK_INLINE

// Device-only code (barriers, shuffles): plain inline under the emulation.
#if defined(__CUDACC__)
#define RK_DEVICE_INLINE __device__ __forceinline__
#else
#define RK_DEVICE_INLINE inline
#endif

// Fully unrolled loops over register arrays (nvcc keeps such arrays in
// registers only when every index is a constant).
#if defined(__CUDACC__)
#define RK_UNROLL _Pragma("unroll")
#else
#define RK_UNROLL
#endif
