// AVX-512 tile kernels of the CPU diff for float64, float32, bfloat16 and float16: the layout of
// diff_avx2.cpp (see there) with eight canonical lanes per vector. A group is eight neighbouring
// lanes; its 128-byte block of each row is permuted so that vector v holds element v of each of
// the eight chunks, and the sums are added in (row, v) order, which is each lane's index order.
// Self-contained (compiled with -mavx512f/bw/vl/dq, reached only after a run-time CPU check); every
// operation is one correctly rounded IEEE operation, so the bits equal the scalar definition
// (tests/test_diff.py holds every kernel to the numpy reference).
#include <immintrin.h>

#include "diff_isa.hpp"

namespace fastckpt::cpu {
namespace {

constexpr uint32_t kRowBytes = 4096;
constexpr uint32_t kRows = kDiffTileBytes / kRowBytes;  // 8

struct Acc8 {
  __m512d max_abs = _mm512_setzero_pd();
  __m512d max_rel = _mm512_setzero_pd();
  __m512i max_ulp = _mm512_setzero_si512();  // unsigned
  uint64_t n_diff = 0;
  uint64_t introduced = 0;
  uint64_t removed = 0;
};

struct Sums8 {
  __m512d abs = _mm512_setzero_pd();
  __m512d sq = _mm512_setzero_pd();
  __m512d a2 = _mm512_setzero_pd();
};

inline uint64_t pop(__mmask8 m) { return static_cast<uint64_t>(__builtin_popcount(static_cast<unsigned>(m))); }

// Eight element pairs, one per lane: x, y their exact float64 values, ord_* their sign-magnitude
// orders (int64), fin_*/same_cls class masks.
// AllFinite: every value of both vectors is finite (then nothing is introduced or removed).
template <bool AllFinite = false>
inline void step(Acc8& acc, Sums8& s, __mmask8 differ, __mmask8 fin_a, __mmask8 fin_b, __mmask8 same_cls,
                 __m512d x, __m512d y, __m512i ord_a, __m512i ord_b) {
  s.a2 = _mm512_add_pd(s.a2, _mm512_maskz_mul_pd(fin_a, x, x));
  acc.n_diff += pop(differ);
  if constexpr (!AllFinite) {
    acc.introduced += pop(differ & static_cast<__mmask8>(~(fin_b | same_cls)));
    acc.removed += pop(differ & static_cast<__mmask8>(~(fin_a | same_cls)));
  }
  const __mmask8 use = differ & fin_a & fin_b;
  const __m512d d = _mm512_abs_pd(_mm512_maskz_sub_pd(use, x, y));  // +0.0 where not used
  s.abs = _mm512_add_pd(s.abs, d);
  s.sq = _mm512_add_pd(s.sq, _mm512_mul_pd(d, d));
  acc.max_abs = _mm512_max_pd(d, acc.max_abs);  // d is never NaN: exact maximum

  const __m512d ax = _mm512_abs_pd(x);
  const __mmask8 ax_zero = _mm512_cmp_pd_mask(ax, _mm512_setzero_pd(), _CMP_EQ_OQ);
  // Division skipped when no lane can raise its maximum (diff_math.hpp's rel_may_exceed).
  const __m512d p = _mm512_mul_pd(acc.max_rel, ax);
  const __mmask8 p_small = _mm512_cmp_pd_mask(p, _mm512_set1_pd(0x1p-900), _CMP_NGE_UQ);
  const __mmask8 may =
      p_small | _mm512_cmp_pd_mask(d, _mm512_mul_pd(p, _mm512_set1_pd(1.0 - 0x1p-40)), _CMP_GE_OQ);
  const __mmask8 divide = (may | ax_zero) & use;
  if (divide != 0) {
    const __m512d q = _mm512_div_pd(d, _mm512_mask_blend_pd(ax_zero, ax, _mm512_set1_pd(1.0)));
    const __mmask8 d_nonzero = _mm512_cmp_pd_mask(d, _mm512_setzero_pd(), _CMP_NEQ_OQ);
    const __m512d inf_or_zero = _mm512_maskz_mov_pd(d_nonzero, _mm512_castsi512_pd(_mm512_set1_epi64(0x7FF0000000000000LL)));
    const __m512d r = _mm512_maskz_mov_pd(use, _mm512_mask_blend_pd(ax_zero, q, inf_or_zero));
    acc.max_rel = _mm512_max_pd(r, acc.max_rel);
  }
  // |ord_a - ord_b| as an unsigned 64-bit distance (max - min never overflows modulo 2^64).
  const __m512i dist = _mm512_sub_epi64(_mm512_max_epi64(ord_a, ord_b), _mm512_min_epi64(ord_a, ord_b));
  acc.max_ulp = _mm512_max_epu64(acc.max_ulp, _mm512_maskz_mov_epi64(use, dist));
}

// Class code of eight float32 patterns: 0 finite, 1 NaN, 2 +Inf, 3 -Inf.
inline __m256i classify32(__m256i bits) {
  const __m256i exp_all = _mm256_set1_epi32(0x7F800000);
  const __m256i top = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exp_all), exp_all);
  const __m256i man_zero = _mm256_cmpeq_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_setzero_si256());
  const __m256i nan = _mm256_andnot_si256(man_zero, top);
  const __m256i inf = _mm256_and_si256(man_zero, top);
  const __m256i inf_cls = _mm256_add_epi32(_mm256_set1_epi32(2), _mm256_srli_epi32(bits, 31));
  return _mm256_or_si256(_mm256_and_si256(nan, _mm256_set1_epi32(1)), _mm256_and_si256(inf, inf_cls));
}

inline __mmask8 finite32(__m256i bits) {
  const __m256i exp_all = _mm256_set1_epi32(0x7F800000);
  return _mm256_cmpneq_epi32_mask(_mm256_and_si256(bits, exp_all), exp_all);
}

// Eight float32 patterns of a and b (one per lane) with their orders in the source format (int32).
inline void step32(Acc8& acc, Sums8& s, __m256i xa, __m256i xb, __m256i oa, __m256i ob) {
  const __mmask8 differ = _mm256_cmpneq_epi32_mask(xa, xb);
  const __m512d x = _mm512_cvtps_pd(_mm256_castsi256_ps(xa)), y = _mm512_cvtps_pd(_mm256_castsi256_ps(xb));
  const __mmask8 all_fin = finite32(xa) & finite32(xb);
  if (all_fin == 0xFF) {  // the common case: no class to work out
    step<true>(acc, s, differ, all_fin, all_fin, all_fin, x, y, _mm512_cvtepi32_epi64(oa), _mm512_cvtepi32_epi64(ob));
    return;
  }
  const __m256i ca = classify32(xa), cb = classify32(xb);
  const __mmask8 fin_a = _mm256_cmpeq_epi32_mask(ca, _mm256_setzero_si256());
  const __mmask8 fin_b = _mm256_cmpeq_epi32_mask(cb, _mm256_setzero_si256());
  const __mmask8 same = _mm256_cmpeq_epi32_mask(ca, cb);
  step(acc, s, differ, fin_a, fin_b, same, x, y, _mm512_cvtepi32_epi64(oa), _mm512_cvtepi32_epi64(ob));
}

inline void a2_32(Sums8& s, __m256i xa) {
  const __m512d x = _mm512_cvtps_pd(_mm256_castsi256_ps(xa));
  s.a2 = _mm512_add_pd(s.a2, _mm512_maskz_mul_pd(finite32(xa), x, x));
}

inline __m256i order32(__m256i bits) {
  return _mm256_xor_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_srai_epi32(bits, 31));
}

inline bool block_equal(const uint8_t* a, const uint8_t* b) {
  const __m512i a0 = _mm512_loadu_si512(a), a1 = _mm512_loadu_si512(a + 64);
  const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
  return (_mm512_cmpneq_epi64_mask(a0, b0) | _mm512_cmpneq_epi64_mask(a1, b1)) == 0;
}

void finish(const Acc8& acc, RowAccum* out) {
  alignas(64) double mx[8], rl[8];
  alignas(64) uint64_t ul[8];
  _mm512_store_pd(mx, acc.max_abs);
  _mm512_store_pd(rl, acc.max_rel);
  _mm512_store_si512(ul, acc.max_ulp);
  for (int i = 0; i < 8; ++i) {
    if (mx[i] > out->max_abs) out->max_abs = mx[i];
    if (rl[i] > out->max_rel) out->max_rel = rl[i];
    if (ul[i] > out->max_ulp) out->max_ulp = ul[i];
  }
  out->n_diff += acc.n_diff;
  out->introduced += acc.introduced;
  out->removed += acc.removed;
}

inline void store_lanes(TileLanes* lanes, uint32_t t, const Sums8& s) {
  _mm512_storeu_pd(lanes->abs + t, s.abs);
  _mm512_storeu_pd(lanes->sq + t, s.sq);
  _mm512_storeu_pd(lanes->a2 + t, s.a2);
}

// Element v of chunks 0..7 from a 128-byte block of 32-bit elements (4 per chunk): out[v].
inline void gather32(const uint8_t* p, __m256i out[4]) {
  const __m512i z0 = _mm512_loadu_si512(p), z1 = _mm512_loadu_si512(p + 64);
  // index 4c + v selects element v of chunk c (0..15 from z0, 16..31 from z1); low half v, high v+1.
  const __m512i i01 = _mm512_set_epi32(29, 25, 21, 17, 13, 9, 5, 1, 28, 24, 20, 16, 12, 8, 4, 0);
  const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
  const __m512i v01 = _mm512_permutex2var_epi32(z0, i01, z1);
  const __m512i v23 = _mm512_permutex2var_epi32(z0, i23, z1);
  out[0] = _mm512_castsi512_si256(v01);
  out[1] = _mm512_extracti64x4_epi64(v01, 1);
  out[2] = _mm512_castsi512_si256(v23);
  out[3] = _mm512_extracti64x4_epi64(v23, 1);
}

// 16-bit index 8c + j (element j of chunk c, chunks 0-3 in z0 and 4-7 in z1) at output word 8j + c.
alignas(64) constexpr uint16_t kGather16[32] = {
    0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57,
    2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59,
};

// Element v of chunks 0..7 from a 128-byte block of 16-bit elements (8 per chunk), zero-extended
// to 32 bits: out[v].
inline void gather16(const uint8_t* p, __m256i out[8]) {
  const __m512i z0 = _mm512_loadu_si512(p), z1 = _mm512_loadu_si512(p + 64);
  const __m512i i0 = _mm512_loadu_si512(kGather16);
  const __m512i i1 = _mm512_add_epi16(i0, _mm512_set1_epi16(4));
  const __m512i v0 = _mm512_permutex2var_epi16(z0, i0, z1);
  const __m512i v1 = _mm512_permutex2var_epi16(z0, i1, z1);
  out[0] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v0, 0));
  out[1] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v0, 1));
  out[2] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v0, 2));
  out[3] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v0, 3));
  out[4] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v1, 0));
  out[5] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v1, 1));
  out[6] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v1, 2));
  out[7] = _mm256_cvtepu16_epi32(_mm512_extracti32x4_epi32(v1, 3));
}

// Zero-extended 16-bit patterns as float32 bit patterns (see diff_avx2.cpp's widen16).
template <bool Half>
inline __m256i to_f32_bits(__m256i u) {
  if constexpr (!Half) {
    return _mm256_slli_epi32(u, 16);
  } else {
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x8000)), 16);
    const __m256i em = _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFF)), 13);
    const __mmask8 special = _mm256_cmpgt_epi32_mask(em, _mm256_set1_epi32(0x0F7FFFFF));  // exponent all ones
    const __m256i scaled = _mm256_castps_si256(
        _mm256_mul_ps(_mm256_castsi256_ps(em), _mm256_castsi256_ps(_mm256_set1_epi32(0x77800000))));  // 2^112
    const __m256i mag = _mm256_mask_blend_epi32(special, scaled, _mm256_or_si256(em, _mm256_set1_epi32(0x7F800000)));
    return _mm256_or_si256(mag, sign);
  }
}

inline __m256i order16(__m256i u) {
  return _mm256_xor_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFF)),
                          _mm256_srai_epi32(_mm256_slli_epi32(u, 16), 31));
}

template <bool Half>
void tile16(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  Acc8 acc;
  for (uint32_t g = 0; g < kDiffLanes / 8; ++g) {
    Sums8 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 128;
      const uint8_t* pb = b + k * kRowBytes + g * 128;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      __m256i ua[8];
      gather16(pa, ua);
      if (equal) {
        for (int v = 0; v < 8; ++v) a2_32(s, to_f32_bits<Half>(ua[v]));
        continue;
      }
      __m256i ub[8];
      gather16(pb, ub);
      for (int v = 0; v < 8; ++v)
        step32(acc, s, to_f32_bits<Half>(ua[v]), to_f32_bits<Half>(ub[v]), order16(ua[v]), order16(ub[v]));
    }
    store_lanes(lanes, 8 * g, s);
  }
  finish(acc, out);
}

}  // namespace

void diff_tile_f32_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  Acc8 acc;
  for (uint32_t g = 0; g < kDiffLanes / 8; ++g) {
    Sums8 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 128;
      const uint8_t* pb = b + k * kRowBytes + g * 128;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      __m256i va[4];
      gather32(pa, va);
      if (equal) {
        for (int v = 0; v < 4; ++v) a2_32(s, va[v]);
        continue;
      }
      __m256i vb[4];
      gather32(pb, vb);
      for (int v = 0; v < 4; ++v) step32(acc, s, va[v], vb[v], order32(va[v]), order32(vb[v]));
    }
    store_lanes(lanes, 8 * g, s);
  }
  finish(acc, out);
}

void diff_tile_bf16_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  tile16<false>(a, b, lanes, out, norm);
}

void diff_tile_f16_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  tile16<true>(a, b, lanes, out, norm);
}

void diff_tile_f64_avx512(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  const __m512i exp_all = _mm512_set1_epi64(0x7FF0000000000000LL);
  const __m512i man = _mm512_set1_epi64(0x000FFFFFFFFFFFFFLL);
  const __m512i mag = _mm512_set1_epi64(0x7FFFFFFFFFFFFFFFLL);
  // Class code: 0 finite, 1 NaN, 2 +Inf, 3 -Inf.
  auto classify = [&](__m512i x) {
    const __mmask8 top = _mm512_cmpeq_epi64_mask(_mm512_and_si512(x, exp_all), exp_all);
    const __mmask8 man_zero = _mm512_testn_epi64_mask(x, man);
    const __m512i inf_cls = _mm512_add_epi64(_mm512_set1_epi64(2), _mm512_srli_epi64(x, 63));
    return _mm512_mask_mov_epi64(_mm512_maskz_mov_epi64(top & static_cast<__mmask8>(~man_zero), _mm512_set1_epi64(1)),
                                 top & man_zero, inf_cls);
  };
  auto order = [&](__m512i x) { return _mm512_xor_si512(_mm512_and_si512(x, mag), _mm512_srai_epi64(x, 63)); };
  // Element v of chunks 0..7 (two per chunk): index 2c + v over z0 (chunks 0-3) and z1 (4-7).
  const __m512i i0 = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i i1 = _mm512_add_epi64(i0, _mm512_set1_epi64(1));
  Acc8 acc;
  for (uint32_t g = 0; g < kDiffLanes / 8; ++g) {
    Sums8 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 128;
      const uint8_t* pb = b + k * kRowBytes + g * 128;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      const __m512i a0 = _mm512_loadu_si512(pa), a1 = _mm512_loadu_si512(pa + 64);
      const __m512i va[2] = {_mm512_permutex2var_epi64(a0, i0, a1), _mm512_permutex2var_epi64(a0, i1, a1)};
      if (equal) {
        for (int v = 0; v < 2; ++v) {
          const __m512d x = _mm512_castsi512_pd(va[v]);
          const __mmask8 fin = _mm512_cmpneq_epi64_mask(_mm512_and_si512(va[v], exp_all), exp_all);
          s.a2 = _mm512_add_pd(s.a2, _mm512_maskz_mul_pd(fin, x, x));
        }
        continue;
      }
      const __m512i b0 = _mm512_loadu_si512(pb), b1 = _mm512_loadu_si512(pb + 64);
      const __m512i vb[2] = {_mm512_permutex2var_epi64(b0, i0, b1), _mm512_permutex2var_epi64(b0, i1, b1)};
      for (int v = 0; v < 2; ++v) {
        const __mmask8 differ = _mm512_cmpneq_epi64_mask(va[v], vb[v]);
        const __mmask8 all_fin = _mm512_cmpneq_epi64_mask(_mm512_and_si512(va[v], exp_all), exp_all) &
                                 _mm512_cmpneq_epi64_mask(_mm512_and_si512(vb[v], exp_all), exp_all);
        if (all_fin == 0xFF) {  // the common case: no class to work out
          step<true>(acc, s, differ, all_fin, all_fin, all_fin, _mm512_castsi512_pd(va[v]), _mm512_castsi512_pd(vb[v]),
                     order(va[v]), order(vb[v]));
          continue;
        }
        const __m512i ca = classify(va[v]), cb = classify(vb[v]);
        const __mmask8 fin_a = _mm512_testn_epi64_mask(ca, ca);
        const __mmask8 fin_b = _mm512_testn_epi64_mask(cb, cb);
        step(acc, s, differ, fin_a, fin_b, _mm512_cmpeq_epi64_mask(ca, cb),
             _mm512_castsi512_pd(va[v]), _mm512_castsi512_pd(vb[v]), order(va[v]), order(vb[v]));
      }
    }
    store_lanes(lanes, 8 * g, s);
  }
  finish(acc, out);
}

}  // namespace fastckpt::cpu
