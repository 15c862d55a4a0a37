// GF(2^8) multiply-accumulate with AVX2 PSHUFB nibble tables: value * b = lo[b & 15] ^ hi[b >> 4],
// 32 table look-ups per shuffle. Compiled with -mavx2; only reached through gf::kernels_for.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {

void mul_acc_avx2(const uint8_t* src, size_t len, uint8_t* const* dst, int n_dst, const CoefTable* coef) {
  const __m256i mask = _mm256_set1_epi8(0x0f);
  size_t i = 0;
  for (; i + 64 <= len; i += 64) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32));
    const __m256i l0 = _mm256_and_si256(x0, mask), h0 = _mm256_and_si256(_mm256_srli_epi16(x0, 4), mask);
    const __m256i l1 = _mm256_and_si256(x1, mask), h1 = _mm256_and_si256(_mm256_srli_epi16(x1, 4), mask);
    for (int r = 0; r < n_dst; ++r) {
      const __m256i tlo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(coef[r].lo)));
      const __m256i thi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(coef[r].hi)));
      const __m256i p0 = _mm256_xor_si256(_mm256_shuffle_epi8(tlo, l0), _mm256_shuffle_epi8(thi, h0));
      const __m256i p1 = _mm256_xor_si256(_mm256_shuffle_epi8(tlo, l1), _mm256_shuffle_epi8(thi, h1));
      __m256i* d = reinterpret_cast<__m256i*>(dst[r] + i);
      _mm256_storeu_si256(d, _mm256_xor_si256(_mm256_loadu_si256(d), p0));
      _mm256_storeu_si256(d + 1, _mm256_xor_si256(_mm256_loadu_si256(d + 1), p1));
    }
  }
  for (; i + 32 <= len; i += 32) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i l = _mm256_and_si256(x, mask), h = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
    for (int r = 0; r < n_dst; ++r) {
      const __m256i tlo = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(coef[r].lo)));
      const __m256i thi = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(coef[r].hi)));
      const __m256i p = _mm256_xor_si256(_mm256_shuffle_epi8(tlo, l), _mm256_shuffle_epi8(thi, h));
      __m256i* d = reinterpret_cast<__m256i*>(dst[r] + i);
      _mm256_storeu_si256(d, _mm256_xor_si256(_mm256_loadu_si256(d), p));
    }
  }
  for (; i < len; ++i) {
    const uint8_t b = src[i];
    for (int r = 0; r < n_dst; ++r) dst[r][i] ^= static_cast<uint8_t>(coef[r].lo[b & 15] ^ coef[r].hi[b >> 4]);
  }
}

void xor_acc_avx2(const uint8_t* src, size_t len, uint8_t* dst) {
  size_t i = 0;
  for (; i + 128 <= len; i += 128) {
    for (size_t v = 0; v < 128; v += 32) {
      __m256i* d = reinterpret_cast<__m256i*>(dst + i + v);
      _mm256_storeu_si256(d, _mm256_xor_si256(_mm256_loadu_si256(d),
                                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + v))));
    }
  }
  for (; i < len; ++i) dst[i] ^= src[i];
}

}  // namespace fastckpt::gf
