// The CPU kernels for x86-64 CPUs with AVX-512 (F, BW, VL, DQ; 32 vector
// registers).
#include "prelude.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RK_ISA_NS isa_avx512
#define RK_ISA_NAME "avx512"
#define RK_VEC_BYTES 64
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c,bmi,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512dq")
#include "kernels.h"
#pragma GCC pop_options
#else
namespace rnnkern::cpu::isa_avx512 {
const KernelTable* table() { return nullptr; }
}  // namespace rnnkern::cpu::isa_avx512
#endif
