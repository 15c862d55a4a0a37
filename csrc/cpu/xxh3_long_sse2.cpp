// XXH3 long-input accumulation loop, SSE2 (the x86-64 baseline every CPU has).
//
// Same signature as the AVX2 and AVX-512 loops (see backend.hpp). This file is self-contained on
// purpose: it must not instantiate inline helpers from shared headers, because each ISA file is
// compiled with different -m flags and the linker may keep any one copy of an inline function.
#include <emmintrin.h>

#include "backend.hpp"

namespace fastckpt::cpu {
namespace {

inline void accumulate_stripe(__m128i* acc, const uint8_t* stripe, const uint8_t* sec) {
  for (int i = 0; i < 4; ++i) {
    const __m128i data = _mm_loadu_si128(reinterpret_cast<const __m128i*>(stripe) + i);
    const __m128i key = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sec) + i);
    const __m128i data_key = _mm_xor_si128(data, key);
    const __m128i product = _mm_mul_epu32(data_key, _mm_srli_epi64(data_key, 32));
    // Swapping the two 64-bit halves adds data[i] into lane i^1, as the algorithm requires.
    const __m128i swapped = _mm_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));
    acc[i] = _mm_add_epi64(acc[i], _mm_add_epi64(product, swapped));
  }
}

inline void scramble(__m128i* acc, const uint8_t* sec) {
  const __m128i prime = _mm_set1_epi32(static_cast<int>(0x9E3779B1U));
  for (int i = 0; i < 4; ++i) {
    __m128i a = _mm_xor_si128(acc[i], _mm_srli_epi64(acc[i], 47));
    a = _mm_xor_si128(a, _mm_loadu_si128(reinterpret_cast<const __m128i*>(sec) + i));
    const __m128i lo = _mm_mul_epu32(a, prime);
    const __m128i hi = _mm_mul_epu32(_mm_srli_epi64(a, 32), prime);
    acc[i] = _mm_add_epi64(lo, _mm_slli_epi64(hi, 32));
  }
}

}  // namespace

void long_accumulate_sse2(uint64_t* acc64, const uint8_t* in, size_t len, const uint8_t* secret) {
  __m128i acc[4];
  for (int i = 0; i < 4; ++i) acc[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(acc64) + i);
  const size_t nb_blocks = (len - 1) / kBlockLen;
  for (size_t b = 0; b < nb_blocks; ++b) {
    const uint8_t* block = in + b * kBlockLen;
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(block + s * kStripeLen + kPrefetchDistance), _MM_HINT_T0);
      accumulate_stripe(acc, block + s * kStripeLen, secret + s * 8);
    }
    scramble(acc, secret + kSecretSize - kStripeLen);
  }
  const size_t nb_stripes = ((len - 1) - kBlockLen * nb_blocks) / kStripeLen;
  const uint8_t* tail = in + nb_blocks * kBlockLen;
  for (size_t s = 0; s < nb_stripes; ++s) accumulate_stripe(acc, tail + s * kStripeLen, secret + s * 8);
  accumulate_stripe(acc, in + len - kStripeLen, secret + kSecretSize - kStripeLen - 7);
  for (int i = 0; i < 4; ++i) _mm_storeu_si128(reinterpret_cast<__m128i*>(acc64) + i, acc[i]);
}

}  // namespace fastckpt::cpu
