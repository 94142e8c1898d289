// The CPU kernels for x86-64 CPUs with AVX2 and FMA (16 vector registers).
#include "prelude.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RK_ISA_NS isa_avx2
#define RK_ISA_NAME "avx2"
#define RK_VEC_BYTES 32
#pragma GCC push_options
#pragma GCC target("avx,avx2,fma,f16c,bmi,bmi2,popcnt")
#include "kernels.h"
#pragma GCC pop_options
#else
namespace rnnkern::cpu::isa_avx2 {
const KernelTable* table() { return nullptr; }
}  // namespace rnnkern::cpu::isa_avx2
#endif
