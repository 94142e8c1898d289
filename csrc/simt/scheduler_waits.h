// Warp-synchronous ops and deadlock reports of the SIMT scheduler
// (scheduler.h): what a warp's lanes get back from a shuffle or vote once all
// lanes of the op's mask have arrived, and what a stuck launch says.
#pragma once

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
      spinning += st == FiberState::kSpinning || (st == FiberState::kReady && fiber(r, s, i).polling);
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
