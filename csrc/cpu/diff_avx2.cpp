// AVX2 row kernels of the CPU diff for float64, float32 and bfloat16: four element pairs per step in
// float64 lanes. Self-contained (compiled with -mavx2): it repeats the definitions of
// common/diff_math.hpp with intrinsics rather than calling its inline functions, and
// tests/test_diff.py holds it to the numpy reference bit for bit (special values included).
//
// Every statistic is an exact IEEE operation (sub, mul, div, max of non-NaN values), so the
// vector form rounds exactly like the scalar one; -ffp-contract=off keeps mul and add apart.
#include <immintrin.h>

#include "diff_isa.hpp"

namespace fastckpt::cpu {
namespace {

struct Acc4 {
  __m256d max_abs = _mm256_setzero_pd();
  __m256d max_rel = _mm256_setzero_pd();
  __m256i max_ulp = _mm256_set1_epi64x(static_cast<long long>(0x8000000000000000ULL));  // biased by 2^63 so a
                                                                                        // signed compare orders it
  __m256i n_diff = _mm256_setzero_si256();
  __m256i introduced = _mm256_setzero_si256();
  __m256i removed = _mm256_setzero_si256();
};

// Four lanes of one step. Masks are all-ones/all-zeros per 64-bit lane. `cls` is 0 finite, 1 NaN,
// 2 +Inf, 3 -Inf; `ord` the sign-magnitude order (+0 -> 0, -0 -> -1, ...) as int64.
inline void step(Acc4& acc, __m256i differ, __m256i cls_a, __m256i cls_b, __m256d x, __m256d y, __m256i ord_a,
                 __m256i ord_b, double* c_abs, double* c_sq) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i fin_a = _mm256_cmpeq_epi64(cls_a, zero);
  const __m256i fin_b = _mm256_cmpeq_epi64(cls_b, zero);
  const __m256i same_cls = _mm256_cmpeq_epi64(cls_a, cls_b);
  acc.n_diff = _mm256_sub_epi64(acc.n_diff, differ);
  acc.introduced = _mm256_sub_epi64(acc.introduced, _mm256_andnot_si256(_mm256_or_si256(fin_b, same_cls), differ));
  acc.removed = _mm256_sub_epi64(acc.removed, _mm256_andnot_si256(_mm256_or_si256(fin_a, same_cls), differ));
  const __m256d use = _mm256_castsi256_pd(_mm256_and_si256(differ, _mm256_and_si256(fin_a, fin_b)));

  const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
  const __m256d d = _mm256_and_pd(_mm256_and_pd(_mm256_sub_pd(x, y), abs_mask), use);
  _mm256_storeu_pd(c_abs, d);
  _mm256_storeu_pd(c_sq, _mm256_mul_pd(d, d));
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

// Sign-magnitude order of 32-bit patterns: magnitude, or its complement (-mag - 1) when negative.
inline __m128i order32(__m128i bits) {
  return _mm_xor_si128(_mm_and_si128(bits, _mm_set1_epi32(0x7FFFFFFF)), _mm_srai_epi32(bits, 31));
}

Acc4 start() { return Acc4{}; }

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

}  // namespace

void diff_row_f64_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc) {
  Acc4 v = start();
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
  for (uint32_t i = 0; i < n; i += 4) {
    const __m256i xa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 8 * i));
    const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 8 * i));
    const __m256i differ = _mm256_xor_si256(_mm256_cmpeq_epi64(xa, xb), _mm256_set1_epi64x(-1));
    step(v, differ, classify(xa), classify(xb), _mm256_castsi256_pd(xa), _mm256_castsi256_pd(xb), order(xa), order(xb),
         c_abs + i, c_sq + i);
  }
  finish(v, acc);
}

void diff_row_f32_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc) {
  Acc4 v = start();
  for (uint32_t i = 0; i < n; i += 4) {
    const __m128i xa = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 4 * i));
    const __m128i xb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4 * i));
    const __m256i differ = _mm256_cvtepi32_epi64(_mm_xor_si128(_mm_cmpeq_epi32(xa, xb), _mm_set1_epi32(-1)));
    step(v, differ, classify32(xa), classify32(xb), _mm256_cvtps_pd(_mm_castsi128_ps(xa)),
         _mm256_cvtps_pd(_mm_castsi128_ps(xb)), _mm256_cvtepi32_epi64(order32(xa)), _mm256_cvtepi32_epi64(order32(xb)),
         c_abs + i, c_sq + i);
  }
  finish(v, acc);
}

void diff_row_bf16_avx2(const uint8_t* a, const uint8_t* b, uint32_t n, double* c_abs, double* c_sq, RowAccum* acc) {
  Acc4 v = start();
  for (uint32_t i = 0; i < n; i += 4) {
    // bfloat16 is the top half of a float32: widen, then everything is the float32 path, except
    // that the order is counted in bfloat16 steps (>> 16 keeps -mag - 1 for negatives).
    const __m128i xa = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + 2 * i))), 16);
    const __m128i xb = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 * i))), 16);
    const __m256i differ = _mm256_cvtepi32_epi64(_mm_xor_si128(_mm_cmpeq_epi32(xa, xb), _mm_set1_epi32(-1)));
    step(v, differ, classify32(xa), classify32(xb), _mm256_cvtps_pd(_mm_castsi128_ps(xa)),
         _mm256_cvtps_pd(_mm_castsi128_ps(xb)), _mm256_cvtepi32_epi64(_mm_srai_epi32(order32(xa), 16)),
         _mm256_cvtepi32_epi64(_mm_srai_epi32(order32(xb), 16)), c_abs + i, c_sq + i);
  }
  finish(v, acc);
}

}  // namespace fastckpt::cpu
