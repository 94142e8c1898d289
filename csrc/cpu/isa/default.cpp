// The CPU kernels for any x86-64 (or other) CPU: the compiler's baseline
// target, 16-byte vectors.
#define RK_ISA_NS isa_default
#define RK_ISA_NAME "default"
#define RK_VEC_BYTES 16
#include "prelude.h"
#include "kernels.h"
