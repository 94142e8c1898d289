// Everything the per-capability kernel sources include, included by each
// isa/<capability>.cpp BEFORE it switches the compiler's target: library code
// (the standard library, ATen, c10) must be compiled for the baseline CPU
// only. Inline functions of those headers are emitted once per object file
// and the linker keeps any one copy; a copy compiled for AVX-512 would then
// run on every CPU.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "../../core/driver.h"
#include "../../core/step_elements.h"
#include "../kernel_table.h"
