// Bitwise tensor diff: the per-element statistics and the canonical reduction order, written once
// for host and device (docs/DIFF_SEMANTICS.md is the normative description).
//
// The CPU kernel (csrc/cpu/diff.cpp), the CUDA kernel (csrc/cuda/diff.cu) and the numpy reference
// (src/fastckpt/_diff_reference.py) all produce bit-identical results because:
//   * every floating statistic is computed in IEEE float64 with explicit round-to-nearest
//     operations (no fused multiply-add: __dadd_rn/__dmul_rn on the device, -ffp-contract=off on
//     the host), and decoding a stored value to float64 is exact for every supported format;
//   * maxima, counts and the first index do not depend on the order of reduction;
//   * the two sums (|a-b| and (a-b)^2) follow one fixed order: 16-byte chunks are dealt to 256
//     lanes per 32 KiB tile (chunk c of a tile goes to lane c mod 256), each lane adds its elements
//     in index order, the 256 lanes are combined by a halving tree (lane t += lane t+h for
//     h = 128, 64, ..., 1), tiles are added sequentially within super-tiles of 256 tiles, and
//     super-tiles are added sequentially. That is the order a CUDA block reduces in, and it is cheap
//     on a CPU as well.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if !defined(FCK_HD)
#if defined(__CUDACC__)
#define FCK_HD __host__ __device__ __forceinline__
#else
#define FCK_HD inline
#endif
#endif

namespace fastckpt {
namespace diff {

enum class Kind : uint32_t {
  kBits = 0,  // compared bitwise only (integers, bool, complex, unknown formats)
  kF64 = 1,
  kF32 = 2,
  kF16 = 3,
  kBF16 = 4,
  kF8E4M3FN = 5,
  kF8E5M2 = 6,
};

constexpr uint32_t kLanes = 256;
constexpr uint32_t kChunkBytes = 16;
constexpr uint32_t kChunksPerLane = 8;
constexpr uint64_t kTileBytes = uint64_t{kLanes} * kChunksPerLane * kChunkBytes;  // 32 KiB
constexpr uint64_t kTilesPerSuper = 256;
constexpr uint64_t kNoIndex = ~uint64_t{0};

// The statistics of a range of elements. `sum_abs`/`sum_sq` are partial sums in the canonical
// order; everything else is order-free. Plain old data: it is copied between host and device.
struct Partial {
  double sum_abs;
  double sum_sq;
  double max_abs;
  double max_rel;
  uint64_t max_ulp;
  uint64_t n_diff;
  uint64_t introduced;  // b is NaN/Inf where a is not (of a different class)
  uint64_t removed;     // a is NaN/Inf where b is not (of a different class)
  uint64_t first_diff;  // element index, kNoIndex when none
};

FCK_HD Partial empty_partial() { return Partial{0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, kNoIndex}; }

// ---- exact IEEE helpers (never contracted into FMA) ----
FCK_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
FCK_HD double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
FCK_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FCK_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
FCK_HD double bits_to_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
#endif
}
FCK_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
FCK_HD uint64_t double_to_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
#endif
}
FCK_HD double abs_exact(double x) { return bits_to_double(double_to_bits(x) & 0x7FFFFFFFFFFFFFFFULL); }
// 2^k for -1022 <= k <= 1023, built from its bit pattern (exact, no libm).
FCK_HD double pow2i(int k) { return bits_to_double(static_cast<uint64_t>(k + 1023) << 52); }

constexpr uint64_t kInfBits = 0x7FF0000000000000ULL;

// ---- formats ----
template <Kind K>
struct Format;
template <>
struct Format<Kind::kF64> {
  static constexpr int kWidth = 64, kExp = 11, kMan = 52;
};
template <>
struct Format<Kind::kF32> {
  static constexpr int kWidth = 32, kExp = 8, kMan = 23;
};
template <>
struct Format<Kind::kF16> {
  static constexpr int kWidth = 16, kExp = 5, kMan = 10;
};
template <>
struct Format<Kind::kBF16> {
  static constexpr int kWidth = 16, kExp = 8, kMan = 7;
};
template <>
struct Format<Kind::kF8E4M3FN> {
  static constexpr int kWidth = 8, kExp = 4, kMan = 3;
};
template <>
struct Format<Kind::kF8E5M2> {
  static constexpr int kWidth = 8, kExp = 5, kMan = 2;
};

enum : uint8_t { kFinite = 0, kNaN = 1, kPosInf = 2, kNegInf = 3 };

template <Kind K>
FCK_HD uint8_t classify(uint64_t bits) {
  using F = Format<K>;
  constexpr uint64_t man_mask = (uint64_t{1} << F::kMan) - 1;
  constexpr uint64_t exp_mask = (uint64_t{1} << F::kExp) - 1;
  const uint64_t e = (bits >> F::kMan) & exp_mask;
  const uint64_t m = bits & man_mask;
  if constexpr (K == Kind::kF8E4M3FN) {
    // "fn": no infinities; only S.1111.111 is NaN, the rest of the top binade is finite.
    return (e == exp_mask && m == man_mask) ? kNaN : kFinite;
  } else {
    if (e != exp_mask) return kFinite;
    if (m != 0) return kNaN;
    return ((bits >> (F::kWidth - 1)) & 1) ? kNegInf : kPosInf;
  }
}

// The exact value of a finite element as float64.
template <Kind K>
FCK_HD double decode(uint64_t bits) {
  using F = Format<K>;
  if constexpr (K == Kind::kF64) {
    return bits_to_double(bits);
  } else if constexpr (K == Kind::kF32) {
    return static_cast<double>(bits_to_float(static_cast<uint32_t>(bits)));
  } else if constexpr (K == Kind::kBF16) {
    return static_cast<double>(bits_to_float(static_cast<uint32_t>(bits) << 16));
  } else {
    constexpr int bias = (1 << (F::kExp - 1)) - 1;
    constexpr uint32_t man_mask = (1u << F::kMan) - 1;
    constexpr uint32_t exp_mask = (1u << F::kExp) - 1;
    const uint32_t b = static_cast<uint32_t>(bits);
    const int e = static_cast<int>((b >> F::kMan) & exp_mask);
    const uint32_t m = b & man_mask;
    const double v = e == 0 ? mul_rn(static_cast<double>(m), pow2i(1 - bias - F::kMan))
                            : mul_rn(static_cast<double>(m | (1u << F::kMan)), pow2i(e - bias - F::kMan));
    return ((b >> (F::kWidth - 1)) & 1) ? -v : v;
  }
}

// Sign-magnitude bits mapped to integers that order like the values: +0 -> 0, -0 -> -1, and so on
// outwards. So -0 and +0 are one ULP apart, matching the bitwise view.
template <Kind K>
FCK_HD int64_t ordered(uint64_t bits) {
  constexpr int w = Format<K>::kWidth;
  constexpr uint64_t mag_mask = w == 64 ? 0x7FFFFFFFFFFFFFFFULL : (uint64_t{1} << (w - 1)) - 1;
  const uint64_t mag = bits & mag_mask;
  return ((bits >> (w - 1)) & 1) ? -static_cast<int64_t>(mag) - 1 : static_cast<int64_t>(mag);
}
FCK_HD uint64_t ulp_distance(int64_t x, int64_t y) {
  const uint64_t ux = static_cast<uint64_t>(x), uy = static_cast<uint64_t>(y);
  return x >= y ? ux - uy : uy - ux;  // exact: the true distance is below 2^64
}

// Whether fl(d / aa) can exceed `cur` (d >= 0, aa > 0). Conservative, so skipping the division when
// it answers false never changes the maximum: when p = cur*aa is normal, p*(1 - 2^-40) lies below
// the real product, and d > cur*aa is necessary for fl(d/aa) > cur.
FCK_HD bool rel_may_exceed(double d, double aa, double cur) {
  const double p = mul_rn(cur, aa);
  if (!(p >= 0x1p-900)) return true;
  return d >= mul_rn(p, 1.0 - 0x1p-40);
}

// One element whose bits differ. `lane_abs`/`lane_sq` are the running sums of the element's lane.
template <Kind K>
FCK_HD void differing_element(uint64_t ua, uint64_t ub, uint64_t index, Partial& p, double& lane_abs,
                              double& lane_sq) {
  p.n_diff += 1;
  if (index < p.first_diff) p.first_diff = index;
  if constexpr (K != Kind::kBits) {
    const uint8_t ca = classify<K>(ua), cb = classify<K>(ub);
    if (ca != kFinite || cb != kFinite) {
      if (cb != kFinite && cb != ca) p.introduced += 1;
      if (ca != kFinite && ca != cb) p.removed += 1;
      return;
    }
    const double a = decode<K>(ua), b = decode<K>(ub);
    const double d = abs_exact(sub_rn(a, b));
    lane_abs = add_rn(lane_abs, d);
    lane_sq = add_rn(lane_sq, mul_rn(d, d));
    if (d > p.max_abs) p.max_abs = d;
    const double aa = abs_exact(a);
    if (aa == 0.0) {
      if (d != 0.0) p.max_rel = bits_to_double(kInfBits);
    } else if (rel_may_exceed(d, aa, p.max_rel)) {
      const double r = div_rn(d, aa);
      if (r > p.max_rel) p.max_rel = r;
    }
    const uint64_t u = ulp_distance(ordered<K>(ua), ordered<K>(ub));
    if (u > p.max_ulp) p.max_ulp = u;
  }
}

// A 16-byte chunk as two little-endian words; bytes past the end of the data are zero in both
// operands (and never looked at: `n_elems` bounds the loop).
struct Chunk {
  uint64_t w[2];
};

// All elements of one chunk, in index order, into one lane. `first_index` is the element index of
// the chunk's first element. The two words are handled separately so that a GPU thread never
// indexes its registers with a run-time value (which would move the chunk to local memory).
template <Kind K, uint32_t Size>
FCK_HD void compare_chunk(const Chunk& ca, const Chunk& cb, uint32_t n_elems, uint64_t first_index, Partial& p,
                          double& lane_abs, double& lane_sq) {
  if (ca.w[0] == cb.w[0] && ca.w[1] == cb.w[1]) return;
  if constexpr (Size == 16) {
    p.n_diff += 1;
    if (first_index < p.first_diff) p.first_diff = first_index;
  } else {
    constexpr uint32_t per_word = 8 / Size;
    constexpr uint64_t mask = Size == 8 ? ~uint64_t{0} : (uint64_t{1} << (Size * 8)) - 1;
    for (uint32_t half = 0; half < 2; ++half) {
      const uint64_t wa = half ? ca.w[1] : ca.w[0];
      const uint64_t wb = half ? cb.w[1] : cb.w[0];
      if (wa == wb) continue;
      for (uint32_t v = 0; v < per_word; ++v) {
        const uint32_t e = half * per_word + v;
        if (e >= n_elems) break;
        const uint32_t shift = v * Size * 8;
        const uint64_t ua = Size == 8 ? wa : (wa >> shift) & mask;
        const uint64_t ub = Size == 8 ? wb : (wb >> shift) & mask;
        if (ua != ub) differing_element<K>(ua, ub, first_index + e, p, lane_abs, lane_sq);
      }
    }
  }
}

// The order-free fields of `x` into `into`.
FCK_HD void merge_unordered(Partial& into, const Partial& x) {
  if (x.max_abs > into.max_abs) into.max_abs = x.max_abs;
  if (x.max_rel > into.max_rel) into.max_rel = x.max_rel;
  if (x.max_ulp > into.max_ulp) into.max_ulp = x.max_ulp;
  into.n_diff += x.n_diff;
  into.introduced += x.introduced;
  into.removed += x.removed;
  if (x.first_diff < into.first_diff) into.first_diff = x.first_diff;
}

// Tiles into a super-tile, and super-tiles into the total: sequential, in index order.
FCK_HD Partial fold_sequential(const Partial* xs, uint64_t n) {
  Partial r = empty_partial();
  for (uint64_t i = 0; i < n; ++i) {
    r.sum_abs = add_rn(r.sum_abs, xs[i].sum_abs);
    r.sum_sq = add_rn(r.sum_sq, xs[i].sum_sq);
    merge_unordered(r, xs[i]);
  }
  return r;
}

FCK_HD uint64_t tile_count(uint64_t nbytes) { return (nbytes + kTileBytes - 1) / kTileBytes; }
FCK_HD uint64_t super_count(uint64_t tiles) { return (tiles + kTilesPerSuper - 1) / kTilesPerSuper; }

}  // namespace diff
}  // namespace fastckpt
