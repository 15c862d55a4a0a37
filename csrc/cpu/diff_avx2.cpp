// AVX2 tile kernels of the CPU diff for float64, float32, bfloat16 and float16. Self-contained (compiled with
// -mavx2): it repeats the definitions of common/diff_math.hpp with intrinsics rather than calling
// its inline functions, and tests/test_diff.py holds it to the numpy reference bit for bit (special
// values included).
//
// Layout: a tile is 8 rows of 256 lanes x 16-byte chunks (chunk k*256 + t belongs to lane t). The
// kernel walks groups of four neighbouring lanes; for each group it visits the group's 64-byte block
// in rows 0..7 and transposes every block so that vector v holds element v of each of the four
// chunks. Each float64 vector lane then *is* a canonical lane, and adding the vectors in (row, v)
// order adds each lane's elements in index order: the canonical sums come straight out of
// registers, with no scatter through memory. Every statistic is an exact IEEE operation (sub, mul,
// div, add, max of non-NaN values), so the vector form rounds exactly like the scalar one;
// -ffp-contract=off keeps mul and add apart.
#include <immintrin.h>

#include "diff_isa.hpp"

namespace fastckpt::cpu {
namespace {

constexpr uint32_t kRowBytes = 4096;
constexpr uint32_t kRows = kDiffTileBytes / kRowBytes;  // 8

struct Acc4 {
  __m256d max_abs = _mm256_setzero_pd();
  __m256d max_rel = _mm256_setzero_pd();
  // biased by 2^63 so that a signed compare orders it
  __m256i max_ulp = _mm256_set1_epi64x(static_cast<long long>(0x8000000000000000ULL));
  __m256i n_diff = _mm256_setzero_si256();
  __m256i introduced = _mm256_setzero_si256();
  __m256i removed = _mm256_setzero_si256();
};

// The three running sums of four lanes.
struct Sums4 {
  __m256d abs = _mm256_setzero_pd();
  __m256d sq = _mm256_setzero_pd();
  __m256d a2 = _mm256_setzero_pd();
};

// a^2 over finite a (fin_a all-ones per finite 64-bit lane), else +0.0.
inline void add_a2(Sums4& s, __m256d x, __m256i fin_a) {
  s.a2 = _mm256_add_pd(s.a2, _mm256_and_pd(_mm256_mul_pd(x, x), _mm256_castsi256_pd(fin_a)));
}

// Four element pairs, one per lane. Masks are all-ones/all-zeros per 64-bit lane. `cls` is 0 finite,
// 1 NaN, 2 +Inf, 3 -Inf; `ord` the sign-magnitude order (+0 -> 0, -0 -> -1, ...) as int64.
// AllFinite: every value of both operands is finite (cls_* are then ignored: nothing is
// introduced or removed, and the classes need not be worked out).
template <bool AllFinite = false>
inline void step(Acc4& acc, Sums4& s, __m256i differ, __m256i cls_a, __m256i cls_b, __m256d x, __m256d y,
                 __m256i ord_a, __m256i ord_b) {
  const __m256i zero = _mm256_setzero_si256();
  __m256d use;
  if constexpr (AllFinite) {
    s.a2 = _mm256_add_pd(s.a2, _mm256_mul_pd(x, x));
    acc.n_diff = _mm256_sub_epi64(acc.n_diff, differ);
    use = _mm256_castsi256_pd(differ);
  } else {
    const __m256i fin_a = _mm256_cmpeq_epi64(cls_a, zero);
    const __m256i fin_b = _mm256_cmpeq_epi64(cls_b, zero);
    add_a2(s, x, fin_a);
    const __m256i same_cls = _mm256_cmpeq_epi64(cls_a, cls_b);
    acc.n_diff = _mm256_sub_epi64(acc.n_diff, differ);
    acc.introduced = _mm256_sub_epi64(acc.introduced, _mm256_andnot_si256(_mm256_or_si256(fin_b, same_cls), differ));
    acc.removed = _mm256_sub_epi64(acc.removed, _mm256_andnot_si256(_mm256_or_si256(fin_a, same_cls), differ));
    use = _mm256_castsi256_pd(_mm256_and_si256(differ, _mm256_and_si256(fin_a, fin_b)));
  }

  const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
  const __m256d d = _mm256_and_pd(_mm256_and_pd(_mm256_sub_pd(x, y), abs_mask), use);
  s.abs = _mm256_add_pd(s.abs, d);
  s.sq = _mm256_add_pd(s.sq, _mm256_mul_pd(d, d));
  acc.max_abs = _mm256_max_pd(d, acc.max_abs);  // d is never NaN: exact maximum

  const __m256d ax = _mm256_and_pd(x, abs_mask);
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d inf = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FF0000000000000LL));
  const __m256d ax_zero = _mm256_cmp_pd(ax, _mm256_setzero_pd(), _CMP_EQ_OQ);
  // The division is skipped when no lane can raise its maximum (diff_math.hpp's rel_may_exceed:
  // with p = max * |a| normal, d < p * (1 - 2^-40) proves fl(d / |a|) <= max). Exact either way.
  const __m256d p = _mm256_mul_pd(acc.max_rel, ax);
  const __m256d p_small = _mm256_cmp_pd(p, _mm256_set1_pd(0x1p-900), _CMP_NGE_UQ);
  const __m256d may = _mm256_or_pd(p_small, _mm256_cmp_pd(d, _mm256_mul_pd(p, _mm256_set1_pd(1.0 - 0x1p-40)), _CMP_GE_OQ));
  if (_mm256_movemask_pd(_mm256_and_pd(_mm256_or_pd(may, ax_zero), use)) != 0) {
    const __m256d q = _mm256_div_pd(d, _mm256_blendv_pd(ax, one, ax_zero));
    const __m256d d_nonzero = _mm256_cmp_pd(d, _mm256_setzero_pd(), _CMP_NEQ_OQ);
    const __m256d r = _mm256_and_pd(_mm256_blendv_pd(q, _mm256_and_pd(inf, d_nonzero), ax_zero), use);
    acc.max_rel = _mm256_max_pd(r, acc.max_rel);
  }

  const __m256i delta = _mm256_sub_epi64(ord_a, ord_b);
  const __m256i b_above = _mm256_cmpgt_epi64(ord_b, ord_a);
  const __m256i dist = _mm256_blendv_epi8(delta, _mm256_sub_epi64(zero, delta), b_above);
  // No AVX constant lives at namespace scope: its initializer would run at import, on any CPU.
  const __m256i bias = _mm256_set1_epi64x(static_cast<long long>(0x8000000000000000ULL));
  const __m256i dist_b = _mm256_xor_si256(_mm256_and_si256(dist, _mm256_castpd_si256(use)), bias);
  acc.max_ulp = _mm256_blendv_epi8(acc.max_ulp, dist_b, _mm256_cmpgt_epi64(dist_b, acc.max_ulp));
}

// Classes of 32-bit float bit patterns (also bfloat16 widened by << 16), widened to 64-bit lanes.
inline __m256i classify32(__m128i bits) {
  const __m128i exp_all = _mm_set1_epi32(0x7F800000);
  const __m128i top = _mm_cmpeq_epi32(_mm_and_si128(bits, exp_all), exp_all);
  const __m128i man_zero = _mm_cmpeq_epi32(_mm_and_si128(bits, _mm_set1_epi32(0x007FFFFF)), _mm_setzero_si128());
  const __m128i nan = _mm_andnot_si128(man_zero, top);
  const __m128i inf = _mm_and_si128(man_zero, top);
  const __m128i inf_cls = _mm_add_epi32(_mm_set1_epi32(2), _mm_srli_epi32(bits, 31));
  const __m128i cls = _mm_or_si128(_mm_and_si128(nan, _mm_set1_epi32(1)), _mm_and_si128(inf, inf_cls));
  return _mm256_cvtepi32_epi64(cls);
}

// Finite 32-bit patterns: all-ones 64-bit lanes.
inline __m256i finite32(__m128i bits) {
  const __m128i exp_all = _mm_set1_epi32(0x7F800000);
  return _mm256_cvtepi32_epi64(
      _mm_xor_si128(_mm_cmpeq_epi32(_mm_and_si128(bits, exp_all), exp_all), _mm_set1_epi32(-1)));
}

// Sign-magnitude order of 32-bit patterns: magnitude, or its complement (-mag - 1) when negative.
inline __m128i order32(__m128i bits) {
  return _mm_xor_si128(_mm_and_si128(bits, _mm_set1_epi32(0x7FFFFFFF)), _mm_srai_epi32(bits, 31));
}

// Four float32 patterns of a and b, one per lane, with their sign-magnitude orders in the source
// format (32-bit integers).
inline void step32(Acc4& acc, Sums4& s, __m128i xa, __m128i xb, __m128i oa, __m128i ob) {
  const __m256i differ = _mm256_cvtepi32_epi64(_mm_xor_si128(_mm_cmpeq_epi32(xa, xb), _mm_set1_epi32(-1)));
  const __m256d x = _mm256_cvtps_pd(_mm_castsi128_ps(xa)), y = _mm256_cvtps_pd(_mm_castsi128_ps(xb));
  const __m128i exp_all = _mm_set1_epi32(0x7F800000);
  const __m128i special = _mm_or_si128(_mm_cmpeq_epi32(_mm_and_si128(xa, exp_all), exp_all),
                                       _mm_cmpeq_epi32(_mm_and_si128(xb, exp_all), exp_all));
  if (_mm_testz_si128(special, special)) {  // the common case: every value finite
    step<true>(acc, s, differ, differ, differ, x, y, _mm256_cvtepi32_epi64(oa), _mm256_cvtepi32_epi64(ob));
    return;
  }
  step(acc, s, differ, classify32(xa), classify32(xb), x, y, _mm256_cvtepi32_epi64(oa), _mm256_cvtepi32_epi64(ob));
}

inline void a2_32(Sums4& s, __m128i xa) { add_a2(s, _mm256_cvtps_pd(_mm_castsi128_ps(xa)), finite32(xa)); }

// Whether 64 bytes at a and b are equal.
inline bool block_equal(const uint8_t* a, const uint8_t* b) {
  const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32));
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
  const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
  const __m256i x = _mm256_or_si256(_mm256_xor_si256(a0, b0), _mm256_xor_si256(a1, b1));
  return _mm256_testz_si256(x, x) != 0;
}

// 4x4 transpose of 32-bit elements: in[c] holds 4 elements of chunk c; out[v] holds element v of
// chunks 0..3. On 256-bit registers the same instructions transpose both 128-bit halves at once.
inline void transpose4(const __m128i in[4], __m128i out[4]) {
  const __m128i t0 = _mm_unpacklo_epi32(in[0], in[1]);
  const __m128i t1 = _mm_unpacklo_epi32(in[2], in[3]);
  const __m128i t2 = _mm_unpackhi_epi32(in[0], in[1]);
  const __m128i t3 = _mm_unpackhi_epi32(in[2], in[3]);
  out[0] = _mm_unpacklo_epi64(t0, t1);
  out[1] = _mm_unpackhi_epi64(t0, t1);
  out[2] = _mm_unpacklo_epi64(t2, t3);
  out[3] = _mm_unpackhi_epi64(t2, t3);
}
inline void transpose4(const __m256i in[4], __m256i out[4]) {
  const __m256i t0 = _mm256_unpacklo_epi32(in[0], in[1]);
  const __m256i t1 = _mm256_unpacklo_epi32(in[2], in[3]);
  const __m256i t2 = _mm256_unpackhi_epi32(in[0], in[1]);
  const __m256i t3 = _mm256_unpackhi_epi32(in[2], in[3]);
  out[0] = _mm256_unpacklo_epi64(t0, t1);
  out[1] = _mm256_unpackhi_epi64(t0, t1);
  out[2] = _mm256_unpacklo_epi64(t2, t3);
  out[3] = _mm256_unpackhi_epi64(t2, t3);
}

void finish(const Acc4& acc, RowAccum* out) {
  alignas(32) double mx[4], rl[4];
  alignas(32) uint64_t ul[4], nd[4], in[4], rm[4];
  _mm256_store_pd(mx, acc.max_abs);
  _mm256_store_pd(rl, acc.max_rel);
  _mm256_store_si256(reinterpret_cast<__m256i*>(ul), acc.max_ulp);
  _mm256_store_si256(reinterpret_cast<__m256i*>(nd), acc.n_diff);
  _mm256_store_si256(reinterpret_cast<__m256i*>(in), acc.introduced);
  _mm256_store_si256(reinterpret_cast<__m256i*>(rm), acc.removed);
  for (int i = 0; i < 4; ++i) {
    if (mx[i] > out->max_abs) out->max_abs = mx[i];
    if (rl[i] > out->max_rel) out->max_rel = rl[i];
    const uint64_t u = ul[i] ^ 0x8000000000000000ULL;
    if (u > out->max_ulp) out->max_ulp = u;
    out->n_diff += nd[i];
    out->introduced += in[i];
    out->removed += rm[i];
  }
}

inline void store_lanes(TileLanes* lanes, uint32_t t, const Sums4& s) {
  _mm256_storeu_pd(lanes->abs + t, s.abs);
  _mm256_storeu_pd(lanes->sq + t, s.sq);
  _mm256_storeu_pd(lanes->a2 + t, s.a2);
}

inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

}  // namespace

void diff_tile_f32_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  Acc4 acc;
  for (uint32_t g = 0; g < kDiffLanes / 4; ++g) {
    Sums4 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 64;
      const uint8_t* pb = b + k * kRowBytes + g * 64;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      const __m128i ca[4] = {load128(pa), load128(pa + 16), load128(pa + 32), load128(pa + 48)};
      __m128i va[4];
      transpose4(ca, va);
      if (equal) {
        for (int v = 0; v < 4; ++v) a2_32(s, va[v]);
        continue;
      }
      const __m128i cb[4] = {load128(pb), load128(pb + 16), load128(pb + 32), load128(pb + 48)};
      __m128i vb[4];
      transpose4(cb, vb);
      for (int v = 0; v < 4; ++v) step32(acc, s, va[v], vb[v], order32(va[v]), order32(vb[v]));
    }
    store_lanes(lanes, 4 * g, s);
  }
  finish(acc, out);
}

namespace {

// 16-bit formats as float32 bit patterns. bfloat16 is the top half of a float32. An IEEE half is
// moved into float32 position and rescaled by 2^112 (exact, and it normalises subnormals);
// infinities and NaNs keep their payload. Both classify like the float32 they become.
template <bool Half>
inline __m256i widen16(__m128i h) {
  const __m256i u = _mm256_cvtepu16_epi32(h);
  if constexpr (!Half) {
    return _mm256_slli_epi32(u, 16);
  } else {
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x8000)), 16);
    const __m256i em = _mm256_slli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFF)), 13);
    const __m256i special = _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x0F7FFFFF));  // exponent all ones
    const __m256i scaled = _mm256_castps_si256(
        _mm256_mul_ps(_mm256_castsi256_ps(em), _mm256_castsi256_ps(_mm256_set1_epi32(0x77800000))));  // 2^112
    const __m256i mag = _mm256_blendv_epi8(scaled, _mm256_or_si256(em, _mm256_set1_epi32(0x7F800000)), special);
    return _mm256_or_si256(mag, sign);
  }
}

// Sign-magnitude order of raw 16-bit patterns (zero-extended to 32 bits).
inline __m256i order16(__m256i u) {
  return _mm256_xor_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFF)),
                          _mm256_srai_epi32(_mm256_slli_epi32(u, 16), 31));
}

template <bool Half>
void tile16(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  // Eight elements per chunk, widened to 32 bits (low half elements 0-3, high half 4-7); one
  // transpose handles both halves, then it is the float32 path with the order of the 16-bit format.
  auto widen = [](const uint8_t* p, __m256i bits[4], __m256i ord[4]) {
    __m256i w[4], o[4];
    for (int c = 0; c < 4; ++c) {
      const __m128i h = load128(p + 16 * c);
      w[c] = widen16<Half>(h);
      if (ord != nullptr) o[c] = order16(_mm256_cvtepu16_epi32(h));
    }
    transpose4(w, bits);
    if (ord != nullptr) transpose4(o, ord);
  };
  Acc4 acc;
  for (uint32_t g = 0; g < kDiffLanes / 4; ++g) {
    Sums4 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 64;
      const uint8_t* pb = b + k * kRowBytes + g * 64;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      __m256i va[4], oa[4], vb[4], ob[4];
      if (equal) {
        widen(pa, va, nullptr);
        for (int v = 0; v < 4; ++v) a2_32(s, _mm256_castsi256_si128(va[v]));
        for (int v = 0; v < 4; ++v) a2_32(s, _mm256_extracti128_si256(va[v], 1));
        continue;
      }
      widen(pa, va, oa);
      widen(pb, vb, ob);
      for (int v = 0; v < 4; ++v)
        step32(acc, s, _mm256_castsi256_si128(va[v]), _mm256_castsi256_si128(vb[v]), _mm256_castsi256_si128(oa[v]),
               _mm256_castsi256_si128(ob[v]));
      for (int v = 0; v < 4; ++v)
        step32(acc, s, _mm256_extracti128_si256(va[v], 1), _mm256_extracti128_si256(vb[v], 1),
               _mm256_extracti128_si256(oa[v], 1), _mm256_extracti128_si256(ob[v], 1));
    }
    store_lanes(lanes, 4 * g, s);
  }
  finish(acc, out);
}

}  // namespace

void diff_tile_bf16_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  tile16<false>(a, b, lanes, out, norm);
}

void diff_tile_f16_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  tile16<true>(a, b, lanes, out, norm);
}

void diff_tile_f64_avx2(const uint8_t* a, const uint8_t* b, TileLanes* lanes, RowAccum* out, bool norm) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i exp_all = _mm256_set1_epi64x(0x7FF0000000000000LL);
  const __m256i man = _mm256_set1_epi64x(0x000FFFFFFFFFFFFFLL);
  const __m256i mag = _mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL);
  auto classify = [&](__m256i x) {
    const __m256i top = _mm256_cmpeq_epi64(_mm256_and_si256(x, exp_all), exp_all);
    const __m256i man_zero = _mm256_cmpeq_epi64(_mm256_and_si256(x, man), zero);
    const __m256i inf_cls = _mm256_add_epi64(_mm256_set1_epi64x(2), _mm256_srli_epi64(x, 63));
    return _mm256_or_si256(_mm256_and_si256(_mm256_andnot_si256(man_zero, top), _mm256_set1_epi64x(1)),
                           _mm256_and_si256(_mm256_and_si256(man_zero, top), inf_cls));
  };
  auto order = [&](__m256i x) { return _mm256_xor_si256(_mm256_and_si256(x, mag), _mm256_cmpgt_epi64(zero, x)); };
  auto finite = [&](__m256i x) {
    return _mm256_xor_si256(_mm256_cmpeq_epi64(_mm256_and_si256(x, exp_all), exp_all), _mm256_set1_epi64x(-1));
  };
  Acc4 acc;
  for (uint32_t g = 0; g < kDiffLanes / 4; ++g) {
    Sums4 s;
    for (uint32_t k = 0; k < kRows; ++k) {
      const uint8_t* pa = a + k * kRowBytes + g * 64;
      const uint8_t* pb = b + k * kRowBytes + g * 64;
      const bool equal = block_equal(pa, pb);
      if (equal && !norm) continue;  // nothing to add: no difference, and ||A|| not wanted
      // Two chunks (two elements each) per load; the unpacks give element v of chunks 0, 2, 1, 3.
      const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pa));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pa + 32));
      const __m256i va[2] = {_mm256_unpacklo_epi64(a0, a1), _mm256_unpackhi_epi64(a0, a1)};
      if (equal) {
        for (int v = 0; v < 2; ++v) add_a2(s, _mm256_castsi256_pd(va[v]), finite(va[v]));
        continue;
      }
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + 32));
      const __m256i vb[2] = {_mm256_unpacklo_epi64(b0, b1), _mm256_unpackhi_epi64(b0, b1)};
      for (int v = 0; v < 2; ++v) {
        const __m256i differ = _mm256_xor_si256(_mm256_cmpeq_epi64(va[v], vb[v]), _mm256_set1_epi64x(-1));
        const __m256i special = _mm256_or_si256(_mm256_cmpeq_epi64(_mm256_and_si256(va[v], exp_all), exp_all),
                                                _mm256_cmpeq_epi64(_mm256_and_si256(vb[v], exp_all), exp_all));
        if (_mm256_testz_si256(special, special)) {  // the common case: every value finite
          step<true>(acc, s, differ, differ, differ, _mm256_castsi256_pd(va[v]), _mm256_castsi256_pd(vb[v]),
                     order(va[v]), order(vb[v]));
          continue;
        }
        step(acc, s, differ, classify(va[v]), classify(vb[v]), _mm256_castsi256_pd(va[v]),
             _mm256_castsi256_pd(vb[v]), order(va[v]), order(vb[v]));
      }
    }
    // Vector positions 0..3 hold lanes 0, 2, 1, 3 of the group: put them back in order.
    s.abs = _mm256_permute4x64_pd(s.abs, _MM_SHUFFLE(3, 1, 2, 0));
    s.sq = _mm256_permute4x64_pd(s.sq, _MM_SHUFFLE(3, 1, 2, 0));
    s.a2 = _mm256_permute4x64_pd(s.a2, _MM_SHUFFLE(3, 1, 2, 0));
    store_lanes(lanes, 4 * g, s);
  }
  finish(acc, out);
}

}  // namespace fastckpt::cpu
