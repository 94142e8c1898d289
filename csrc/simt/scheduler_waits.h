// Warp-synchronous ops and deadlock reports of the SIMT scheduler
// (scheduler.h): what a warp's lanes get back from a shuffle or vote once all
// lanes of the op's mask have arrived, and what a stuck launch says.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "scheduler.h"

namespace rnnkern {
namespace simt {
namespace detail {

inline std::string lane_name(const Runtime& r, unsigned slot, unsigned thread) {
  return "thread " + std::to_string(thread) + " (lane " + std::to_string(thread % 32) +
         ") of block " + dims_name(r.slots[slot].block);
}

// The lane a shuffle reads; `lane` itself when the source is outside the
// lane's width-segment (CUDA returns the caller's own value then).
inline unsigned shuffle_source(const WarpRequest& q, unsigned lane) {
  const unsigned width = static_cast<unsigned>(q.width);
  const unsigned base = lane & ~(width - 1);
  switch (q.op) {
    case WarpOp::kShflIdx: return base + static_cast<unsigned>(q.param) % width;
    case WarpOp::kShflXor: {
      const unsigned src = lane ^ static_cast<unsigned>(q.param);
      return src >= base + width ? lane : src;
    }
    case WarpOp::kShflDown:
      return lane - base + static_cast<unsigned>(q.param) >= width ? lane : lane + q.param;
    case WarpOp::kShflUp:
      return lane - base < static_cast<unsigned>(q.param) ? lane : lane - q.param;
    default: return lane;
  }
}

// A 16-bit float's value: bfloat16 is a float's upper half; fp16 decoded.
inline float bits16_to_float(std::uint32_t bits, bool half) {
  if (!half) {
    const std::uint32_t f = bits << 16;
    float v;
    std::memcpy(&v, &f, 4);
    return v;
  }
  const int sign = bits >> 15 & 1, exponent = bits >> 10 & 31, mantissa = bits & 1023;
  float v;
  if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    v = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return sign ? -v : v;
}

// mma.sync.m16n8k16.row.col.f32 with 16-bit A and B, by PTX's fragment layout
// (tensor_core.h spells it out): gathers A, B and C from the 32 lanes, sums
// each D element over k in order, and hands every lane its part of D.
inline void resolve_mma(Runtime& r, unsigned slot, unsigned first) {
  float A[16][16], B[16][8], C[16][8];
  auto half_of = [](std::uint32_t reg, int hi) { return hi ? reg >> 16 : reg & 0xffffu; };
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto& f = *reinterpret_cast<const MmaFragments*>(fiber(r, slot, first + lane).warp.value);
    const unsigned g = lane / 4, q = lane % 4;
    for (int i = 0; i < 2; ++i) {
      A[g][2 * q + i] = bits16_to_float(half_of(f.a[0], i), f.half);
      A[g + 8][2 * q + i] = bits16_to_float(half_of(f.a[1], i), f.half);
      A[g][2 * q + 8 + i] = bits16_to_float(half_of(f.a[2], i), f.half);
      A[g + 8][2 * q + 8 + i] = bits16_to_float(half_of(f.a[3], i), f.half);
      B[2 * q + i][g] = bits16_to_float(half_of(f.b[0], i), f.half);
      B[2 * q + 8 + i][g] = bits16_to_float(half_of(f.b[1], i), f.half);
      C[g][2 * q + i] = f.c[i];
      C[g + 8][2 * q + i] = f.c[2 + i];
    }
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto& f = *reinterpret_cast<const MmaFragments*>(fiber(r, slot, first + lane).warp.value);
    const unsigned g = lane / 4, q = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const unsigned m = g + (i >= 2 ? 8 : 0), n = 2 * q + i % 2;
      float d = C[m][n];
      for (int k = 0; k < 16; ++k) d += A[m][k] * B[k][n];
      f.c[i] = d;
    }
  }
}

inline bool resolve_warp(Runtime& r, unsigned slot, unsigned warp, std::string& failure) {
  const unsigned first = warp * 32;
  const unsigned lanes = r.threads - first < 32 ? r.threads - first : 32;
  int leader = -1;
  for (unsigned l = 0; l < lanes && leader < 0; ++l) {
    if (fiber(r, slot, first + l).state == FiberState::kAtWarp) leader = static_cast<int>(l);
  }
  if (leader < 0) return false;
  const WarpRequest& q = fiber(r, slot, first + leader).warp;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(q.mask >> l & 1u)) continue;
    if (l >= lanes) {
      failure = "rnnkern::simt: a warp op of " + lane_name(r, slot, first + leader) +
                " names lane " + std::to_string(l) + ", which the block does not have";
      return false;
    }
    const Fiber& f = fiber(r, slot, first + l);
    if (f.state == FiberState::kDone) {
      failure = "rnnkern::simt: a warp op of " + lane_name(r, slot, first + leader) +
                " waits for lane " + std::to_string(l) + ", which exited";
      return false;
    }
    if (f.state != FiberState::kAtWarp) return false;  // not there yet
    if (f.warp.op != q.op || f.warp.mask != q.mask || f.warp.width != q.width) {
      failure = "rnnkern::simt: lanes of warp " + std::to_string(warp) + " of block " +
                dims_name(r.slots[slot].block) + " meet at different warp ops";
      return false;
    }
  }
  if (q.op == WarpOp::kMma) {
    if (q.mask != 0xffffffffu) {
      failure = "rnnkern::simt: mma.sync needs all 32 lanes of the warp";
      return false;
    }
    resolve_mma(r, slot, first);
    for (unsigned l = 0; l < 32; ++l) fiber(r, slot, first + l).state = FiberState::kReady;
    return true;
  }
  std::uint64_t ballot = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (q.mask >> l & 1u) ballot |= std::uint64_t{fiber(r, slot, first + l).warp.value != 0} << l;
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(q.mask >> l & 1u)) continue;
    Fiber& f = fiber(r, slot, first + l);
    if (q.op == WarpOp::kBallot) {
      f.warp.result = ballot;
    } else if (q.op != WarpOp::kSync) {
      const unsigned src = shuffle_source(f.warp, l);
      if (!(q.mask >> src & 1u)) {
        failure = "rnnkern::simt: a shuffle of " + lane_name(r, slot, first + l) +
                  " reads lane " + std::to_string(src) + ", which is not in its mask";
        return false;
      }
      f.warp.result = fiber(r, slot, first + src).warp.value;
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (q.mask >> l & 1u) fiber(r, slot, first + l).state = FiberState::kReady;
  }
  return true;
}

inline std::string deadlock_message(Runtime& r, std::uint64_t unstarted, std::uint64_t blocks) {
  unsigned spinning = 0, at_barrier = 0, at_warp = 0, resident = 0;
  for (unsigned s = 0; s < r.slots.size(); ++s) {
    if (!r.slots[s].active) continue;
    ++resident;
    for (unsigned i = 0; i < r.threads; ++i) {
      const FiberState st = fiber(r, s, i).state;
      const bool polls = st == FiberState::kReady && fiber(r, s, i).polling;
      spinning += st == FiberState::kSpinning || polls;
      at_barrier += st == FiberState::kAtBarrier;
      at_warp += st == FiberState::kAtWarp;
    }
  }
  std::string msg = "rnnkern::simt: deadlock: " + std::to_string(spinning) +
                    " threads spin on memory that no running thread will change, " +
                    std::to_string(at_barrier) + " wait at __syncthreads(), " +
                    std::to_string(at_warp) + " at warp ops, in " + std::to_string(resident) +
                    " resident blocks";
  if (unstarted > 0) {
    msg += "; " + std::to_string(unstarted) + " of the grid's " + std::to_string(blocks) +
           " blocks never started because the launch claims only " + std::to_string(resident) +
           " co-resident blocks (a grid-wide barrier needs the whole grid resident)";
  }
  return msg;
}

}  // namespace detail
}  // namespace simt
}  // namespace rnnkern
