// AVX2 loops of sum_squares for float32 and bfloat16 (the common checkpoint dtypes). Compiled with
// -mavx2 -mfma and reached only after a run-time CPU check (sum_squares.cpp); self-contained: no
// inline functions from shared headers.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fastckpt::cpu {

namespace {

// Eight float32 values -> running sums of squares (two float64 accumulators) and a NaN/Inf count.
inline void accumulate8(__m256 v, __m256d& s0, __m256d& s1, uint64_t& bad) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i exp_mask = _mm256_set1_epi32(0x7F800000);
  const __m256i top = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exp_mask), exp_mask);  // NaN or Inf
  bad += static_cast<uint64_t>(__builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(top)))));
  const __m256 x = _mm256_andnot_ps(_mm256_castsi256_ps(top), v);
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
  s0 = _mm256_fmadd_pd(lo, lo, s0);
  s1 = _mm256_fmadd_pd(hi, hi, s1);
}

inline double finish(__m256d s0, __m256d s1, __m256d s2, __m256d s3) {
  const __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
  double out[4];
  _mm256_storeu_pd(out, s);
  return (out[0] + out[1]) + (out[2] + out[3]);
}

inline double scalar_f32(uint32_t u, uint64_t& bad) {
  if ((u & 0x7F800000u) == 0x7F800000u) {
    ++bad;
    return 0.0;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return static_cast<double>(f) * static_cast<double>(f);
}

}  // namespace

// Returns the sum of squares of the finite elements; adds the NaN/Inf count to *non_finite.
double sum_squares_f32_avx2(const uint8_t* p, size_t n, uint64_t* non_finite) {
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  uint64_t bad = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    accumulate8(_mm256_loadu_ps(reinterpret_cast<const float*>(p + i * 4)), s0, s1, bad);
    accumulate8(_mm256_loadu_ps(reinterpret_cast<const float*>(p + (i + 8) * 4)), s2, s3, bad);
  }
  double tail = 0.0;
  for (; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i * 4, 4);
    tail += scalar_f32(u, bad);
  }
  *non_finite += bad;
  return finish(s0, s1, s2, s3) + tail;
}

double sum_squares_bf16_avx2(const uint8_t* p, size_t n, uint64_t* non_finite) {
  __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
  uint64_t bad = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i * 2));
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
    accumulate8(_mm256_castsi256_ps(lo), s0, s1, bad);
    accumulate8(_mm256_castsi256_ps(hi), s2, s3, bad);
  }
  double tail = 0.0;
  for (; i < n; ++i) {
    uint16_t u;
    std::memcpy(&u, p + i * 2, 2);
    tail += scalar_f32(static_cast<uint32_t>(u) << 16, bad);
  }
  *non_finite += bad;
  return finish(s0, s1, s2, s3) + tail;
}

}  // namespace fastckpt::cpu
