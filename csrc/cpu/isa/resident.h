// The recurrent product of the small-batch forward loop (float): a thread's
// own gate rows of W_hh, transposed and kept in its core's cache for the whole
// sequence, times the few rows of h of a step.
//
// Layout: the thread's output columns (gate g, own unit j at column
// g * padded + j, padded a vector multiple) in tiles of kTileVectors vectors;
// each tile stores, for every k, its columns side by side. A step then streams
// the whole slice once, front to back, with broadcast-FMAs into B x tile
// accumulators: no horizontal reductions, every weight load used B times.
#pragma once

namespace rnnkern {
namespace cpu {
namespace RK_ISA_NS {
namespace {

struct ResidentLayout {
  int64_t k;         // the length of a row of h
  int64_t width;     // own units
  int64_t padded;    // own units rounded up to a vector
  int64_t gates;     // gate rows per unit
  int64_t vectors;   // vectors per tile
  int64_t tiles;
  int64_t tile_cols() const { return vectors * kVecFloats; }
  int64_t size() const { return tiles * tile_cols() * k; }
};

// Accumulator registers a tile may take: half the register file.
constexpr int64_t kAccumulators = RK_VEC_BYTES == 64 ? 16 : 8;

ResidentLayout resident_layout(int64_t k, int64_t width, int64_t gates, int64_t batch) {
  const int64_t padded = (width + kVecFloats - 1) / kVecFloats * kVecFloats;
  const int64_t fit = kAccumulators / std::max<int64_t>(batch, 1);
  const int64_t vectors = fit >= 4 ? 4 : (fit >= 2 ? 2 : 1);
  const int64_t cols = gates * padded, tile = vectors * kVecFloats;
  return {k, width, padded, gates, vectors, (cols + tile - 1) / tile};
}

// Packs rows g * row_stride + begin + j (j < width) of w ([*, k] row-major):
// per tile, each gate's run of own units is one block transposed.
void pack_resident(const float* w, int64_t row_stride, int64_t begin, const ResidentLayout& L,
                   float* out) {
  const int64_t tile = L.tile_cols();
  for (int64_t t = 0; t < L.tiles; ++t) {
    float* dst = out + t * tile * L.k;
    for (int64_t c = 0; c < tile;) {  // column c of this tile: t * tile + c of the slice
      const int64_t col = t * tile + c, g = col / L.padded, j = col % L.padded;
      const int64_t run = std::min(tile - c, L.padded - j);  // same gate to tile's or gate's end
      const int64_t real = g < L.gates ? std::max<int64_t>(0, std::min(run, L.width - j)) : 0;
      if (real > 0) {
        transpose_into(w + (g * row_stride + begin + j) * L.k, L.k, real, L.k, dst + c, tile);
      }
      for (int64_t p = 0; p < L.k && real < run; ++p) {
        std::fill(dst + p * tile + c + real, dst + p * tile + c + run, 0.f);
      }
      c += run;
    }
  }
}

// dst[b * ld + g * gate_stride + j] (+)= (h[b] . w rows)
template <int NB, int NV>
void resident_tiles(const float* h, int64_t ldh, const float* packed, const ResidentLayout& L,
                    float* dst, int64_t ld, int64_t gate_stride, bool accumulate) {
  constexpr int64_t tile = NV * kVecFloats;
  for (int64_t t = 0; t < L.tiles; ++t) {
    const float* p = packed + t * tile * L.k;
    VecF acc[NB][NV];
    for (int b = 0; b < NB; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = vzero();
    for (int64_t k = 0; k < L.k; ++k, p += tile) {
      VecF w[NV];
      for (int v = 0; v < NV; ++v) w[v] = vload(p + v * kVecFloats);
      for (int b = 0; b < NB; ++b) {
        const VecF x = vset1(h[b * ldh + k]);
        for (int v = 0; v < NV; ++v) acc[b][v] = vfma(x, w[v], acc[b][v]);
      }
    }
    for (int v = 0; v < NV; ++v) {
      const int64_t col = t * tile + v * kVecFloats;
      const int64_t g = col / L.padded, j = col % L.padded;
      if (g >= L.gates || j >= L.width) continue;
      const int64_t n = std::min<int64_t>(kVecFloats, L.width - j);
      for (int b = 0; b < NB; ++b) {
        float* d = dst + b * ld + g * gate_stride + j;
        if (n == kVecFloats) {
          vstore(d, accumulate ? vadd(vload(d), acc[b][v]) : acc[b][v]);
        } else {
          alignas(64) float lanes[kVecFloats];
          vstore(lanes, acc[b][v]);
          for (int64_t i = 0; i < n; ++i) d[i] = accumulate ? d[i] + lanes[i] : lanes[i];
        }
      }
    }
  }
}

template <int NV>
void resident_rows(int64_t rows, const float* h, int64_t ldh, const float* packed,
                   const ResidentLayout& L, float* dst, int64_t ld, int64_t gate_stride,
                   bool accumulate) {
  switch (rows) {
#define RK_RESIDENT_CASE(NB)                                                         \
  case NB:                                                                           \
    return resident_tiles<NB, NV>(h, ldh, packed, L, dst, ld, gate_stride, accumulate);
    RK_RESIDENT_CASE(1)
    RK_RESIDENT_CASE(2)
    RK_RESIDENT_CASE(3)
    RK_RESIDENT_CASE(4)
    RK_RESIDENT_CASE(5)
    RK_RESIDENT_CASE(6)
    RK_RESIDENT_CASE(7)
    RK_RESIDENT_CASE(8)
#undef RK_RESIDENT_CASE
    default:
      return;
  }
}

// rows (<= 8, and at most the batch the layout was made for) of h times the
// packed slice, into dst (rows of stride ld; gate g of own unit j at
// g * gate_stride + j); accumulate adds to dst instead of overwriting it.
void resident_product(int64_t rows, const float* h, int64_t ldh, const float* packed,
                      const ResidentLayout& L, float* dst, int64_t ld, int64_t gate_stride,
                      bool accumulate) {
  if (L.vectors == 4) {
    resident_rows<4>(rows, h, ldh, packed, L, dst, ld, gate_stride, accumulate);
  } else if (L.vectors == 2) {
    resident_rows<2>(rows, h, ldh, packed, L, dst, ld, gate_stride, accumulate);
  } else {
    resident_rows<1>(rows, h, ldh, packed, L, dst, ld, gate_stride, accumulate);
  }
}

}  // namespace
}  // namespace RK_ISA_NS
}  // namespace cpu
}  // namespace rnnkern
