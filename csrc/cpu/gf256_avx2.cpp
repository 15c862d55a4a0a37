// GF(2^8) multiply-accumulate with AVX2 PSHUFB nibble tables: value * b = lo[b & 15] ^ hi[b >> 4],
// 32 table look-ups per shuffle. Compiled with -mavx2; only reached through gf::kernels_for.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {
namespace {

constexpr size_t kPrefetch = 2048;  // see gf256_gfni.cpp

inline __m256i table_of(const uint8_t* t16) {
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t16)));
}

// R destination rows at a time, partial sums in registers (see gf256_gfni.cpp).
template <int R>
void rows_avx2(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int stride,
               const CoefTable* coef) {
  const __m256i mask = _mm256_set1_epi8(0x0f);
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    __m256i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
    for (int s = 0; s < n_src; ++s) {
      if ((i & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(src[s] + i + kPrefetch), _MM_HINT_T0);
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src[s] + i));
      const __m256i l = _mm256_and_si256(x, mask), h = _mm256_and_si256(_mm256_srli_epi16(x, 4), mask);
      const CoefTable* c = coef + static_cast<size_t>(s) * stride;
      for (int r = 0; r < R; ++r)
        acc[r] = _mm256_xor_si256(acc[r], _mm256_xor_si256(_mm256_shuffle_epi8(table_of(c[r].lo), l),
                                                           _mm256_shuffle_epi8(table_of(c[r].hi), h)));
    }
    for (int r = 0; r < R; ++r) {
      __m256i* d = reinterpret_cast<__m256i*>(dst[r] + i);
      _mm256_storeu_si256(d, _mm256_xor_si256(_mm256_loadu_si256(d), acc[r]));
    }
  }
  for (; i < len; ++i) {
    for (int r = 0; r < R; ++r) {
      uint8_t v = 0;
      for (int s = 0; s < n_src; ++s) {
        const CoefTable& c = coef[static_cast<size_t>(s) * stride + r];
        const uint8_t b = src[s][i];
        v ^= static_cast<uint8_t>(c.lo[b & 15] ^ c.hi[b >> 4]);
      }
      dst[r][i] ^= v;
    }
  }
}

}  // namespace

void mul_acc_avx2(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                  const CoefTable* coef) {
  int r0 = 0;
  for (; r0 + 4 <= n_dst; r0 += 4) rows_avx2<4>(src, n_src, len, dst + r0, n_dst, coef + r0);
  switch (n_dst - r0) {
    case 3: rows_avx2<3>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 2: rows_avx2<2>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 1: rows_avx2<1>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    default: break;
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
