// XXH3 long-input accumulation loop, AVX-512F: all eight lanes in one register. Compiled with
// -mavx512f; only called after the dispatcher has checked CPU and OS support.
#include <immintrin.h>

#include "backend.hpp"

namespace fastckpt::cpu {
namespace {

inline __m512i accumulate_stripe(__m512i acc, const uint8_t* stripe, const uint8_t* sec) {
  const __m512i data = _mm512_loadu_si512(stripe);
  const __m512i key = _mm512_loadu_si512(sec);
  const __m512i data_key = _mm512_xor_si512(data, key);
  const __m512i product = _mm512_mul_epu32(data_key, _mm512_srli_epi64(data_key, 32));
  const __m512i swapped = _mm512_shuffle_epi32(data, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_add_epi64(acc, _mm512_add_epi64(product, swapped));
}

inline __m512i scramble(__m512i acc, const uint8_t* sec) {
  const __m512i prime = _mm512_set1_epi32(static_cast<int>(0x9E3779B1U));
  __m512i a = _mm512_xor_si512(acc, _mm512_srli_epi64(acc, 47));
  a = _mm512_xor_si512(a, _mm512_loadu_si512(sec));
  const __m512i lo = _mm512_mul_epu32(a, prime);
  const __m512i hi = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), prime);
  return _mm512_add_epi64(lo, _mm512_slli_epi64(hi, 32));
}

}  // namespace

void long_accumulate_avx512(uint64_t* acc64, const uint8_t* in, size_t len, const uint8_t* secret) {
  __m512i acc = _mm512_loadu_si512(acc64);
  const size_t nb_blocks = (len - 1) / kBlockLen;
  for (size_t b = 0; b < nb_blocks; ++b) {
    const uint8_t* block = in + b * kBlockLen;
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(block + s * kStripeLen + kPrefetchDistance), _MM_HINT_T0);
      acc = accumulate_stripe(acc, block + s * kStripeLen, secret + s * 8);
    }
    acc = scramble(acc, secret + kSecretSize - kStripeLen);
  }
  const size_t nb_stripes = ((len - 1) - kBlockLen * nb_blocks) / kStripeLen;
  const uint8_t* tail = in + nb_blocks * kBlockLen;
  for (size_t s = 0; s < nb_stripes; ++s) acc = accumulate_stripe(acc, tail + s * kStripeLen, secret + s * 8);
  acc = accumulate_stripe(acc, in + len - kStripeLen, secret + kSecretSize - kStripeLen - 7);
  _mm512_storeu_si512(acc64, acc);
  _mm256_zeroupper();
}

}  // namespace fastckpt::cpu
